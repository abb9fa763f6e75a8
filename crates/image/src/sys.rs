//! Thin wrappers over the `*at` syscalls the unpacker needs: every one acts relative to a directory
//! fd and never follows a symlink in its last component. Policy lives in `tree`; nothing here
//! decides anything.

use nix::errno::Errno;
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

pub type SysResult<T> = std::result::Result<T, Errno>;

fn check(rc: libc::c_int) -> SysResult<()> {
    if rc < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

fn owned(fd: libc::c_long) -> SysResult<OwnedFd> {
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just returned this descriptor; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A name checked to hold no NUL (archive names are checked by `names::components` first).
pub fn cstring(bytes: &[u8]) -> CString {
    CString::new(bytes).expect("names are checked for NUL before they reach a syscall")
}

pub fn resolve_flags() -> u64 {
    libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS
}

/// openat2(2): `path` resolved with `dir` as its root, under `resolve` (RESOLVE_* flags).
pub fn openat2(dir: BorrowedFd<'_>, path: &CStr, flags: i32, resolve: u64) -> SysResult<OwnedFd> {
    isolate_core::sys::openat2(dir, path, flags, resolve)
}

pub fn openat(dir: BorrowedFd<'_>, name: &CStr, flags: i32, mode: u32) -> SysResult<OwnedFd> {
    // SAFETY: a valid NUL-terminated name relative to a valid dir fd.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) };
    owned(fd as libc::c_long)
}

pub fn open(path: &CStr, flags: i32) -> SysResult<OwnedFd> {
    // SAFETY: a valid NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
    owned(fd as libc::c_long)
}

pub fn dup(fd: BorrowedFd<'_>) -> SysResult<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a fresh descriptor.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    owned(new as libc::c_long)
}

/// lstat relative to `dir`.
pub fn lstatat(dir: BorrowedFd<'_>, name: &CStr) -> SysResult<libc::stat> {
    // SAFETY: stat is plain data filled by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers; AT_SYMLINK_NOFOLLOW keeps a symlink a symlink.
    check(unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

pub fn fstat(fd: BorrowedFd<'_>) -> SysResult<libc::stat> {
    // SAFETY: stat is plain data filled by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd and pointer.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

pub fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub fn is_symlink(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> SysResult<()> {
    // SAFETY: valid dir fd and name.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) })
}

pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> SysResult<()> {
    // SAFETY: valid strings and dir fd.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
}

/// A hard link; flags 0: when the source is a symlink, the symlink itself is linked.
pub fn linkat(from_dir: BorrowedFd<'_>, from: &CStr, to_dir: BorrowedFd<'_>, to: &CStr) -> SysResult<()> {
    // SAFETY: valid strings and dir fds.
    check(unsafe { libc::linkat(from_dir.as_raw_fd(), from.as_ptr(), to_dir.as_raw_fd(), to.as_ptr(), 0) })
}

pub fn mknodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32, dev: libc::dev_t) -> SysResult<()> {
    // SAFETY: valid dir fd and name.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t, dev) })
}

pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, remove_dir: bool) -> SysResult<()> {
    let flags = if remove_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: valid dir fd and name.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })
}

pub fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> SysResult<()> {
    // SAFETY: a valid fd.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) })
}

/// chown of `name` itself (a symlink stays a symlink).
pub fn lchownat(dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> SysResult<()> {
    // SAFETY: valid dir fd and name.
    check(unsafe { libc::fchownat(dir.as_raw_fd(), name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })
}

pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> SysResult<()> {
    // SAFETY: a valid fd.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) })
}

fn times(mtime: i64) -> [libc::timespec; 2] {
    let t = libc::timespec { tv_sec: mtime as libc::time_t, tv_nsec: 0 };
    [t, t]
}

/// atime and mtime of an open file.
pub fn futimens(fd: BorrowedFd<'_>, mtime: i64) -> SysResult<()> {
    let ts = times(mtime);
    // SAFETY: a valid fd and two timespecs.
    check(unsafe { libc::futimens(fd.as_raw_fd(), ts.as_ptr()) })
}

/// atime and mtime of `name` itself (for symlinks).
pub fn lutimensat(dir: BorrowedFd<'_>, name: &CStr, mtime: i64) -> SysResult<()> {
    let ts = times(mtime);
    // SAFETY: valid dir fd, name and two timespecs.
    check(unsafe { libc::utimensat(dir.as_raw_fd(), name.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
}

pub fn fsetxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> SysResult<()> {
    // SAFETY: a valid fd, name and value buffer.
    check(unsafe { libc::fsetxattr(fd.as_raw_fd(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
}

/// The entries of an open directory (not `.` and `..`), with whether each is a directory when
/// the filesystem says so (None: ask lstat).
pub fn list_dir(dir: BorrowedFd<'_>) -> SysResult<Vec<(CString, Option<bool>)>> {
    let fd = openat(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let mut d = nix::dir::Dir::from_fd(fd)?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e?;
        let name = e.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let is_dir = e.file_type().map(|t| t == nix::dir::Type::Directory);
        out.push((name.to_owned(), is_dir));
    }
    Ok(out)
}

pub fn geteuid() -> u32 {
    // SAFETY: always succeeds.
    unsafe { libc::geteuid() }
}
