//! Small wrappers over libc for the probes: errno names, raw syscalls, files, /proc parsing and
//! running a closure in a throwaway child process.

use std::ffi::CString;

/// x86_64 syscall numbers used directly (so nothing depends on what libc happens to wrap).
pub mod nr {
    pub const IOCTL: i64 = 16;
    pub const GETPID: i64 = 39;
    pub const CLONE: i64 = 56;
    pub const PTRACE: i64 = 101;
    pub const SYSLOG: i64 = 103;
    pub const CAPGET: i64 = 125;
    pub const CAPSET: i64 = 126;
    pub const PERSONALITY: i64 = 135;
    pub const SCHED_SETSCHEDULER: i64 = 144;
    pub const ACCT: i64 = 163;
    pub const SWAPON: i64 = 167;
    pub const REBOOT: i64 = 169;
    pub const IOPL: i64 = 172;
    pub const IOPERM: i64 = 173;
    pub const INIT_MODULE: i64 = 175;
    pub const DELETE_MODULE: i64 = 176;
    pub const KEXEC_LOAD: i64 = 246;
    pub const ADD_KEY: i64 = 248;
    pub const KEYCTL: i64 = 250;
    pub const UNSHARE: i64 = 272;
    pub const PERF_EVENT_OPEN: i64 = 298;
    pub const NAME_TO_HANDLE_AT: i64 = 303;
    pub const OPEN_BY_HANDLE_AT: i64 = 304;
    pub const SETNS: i64 = 308;
    pub const PROCESS_VM_READV: i64 = 310;
    pub const FINIT_MODULE: i64 = 313;
    pub const MEMFD_CREATE: i64 = 319;
    pub const KEXEC_FILE_LOAD: i64 = 320;
    pub const BPF: i64 = 321;
    pub const USERFAULTFD: i64 = 323;
    pub const IO_URING_SETUP: i64 = 425;
    pub const OPEN_TREE: i64 = 428;
    pub const FSOPEN: i64 = 430;
    pub const PIDFD_OPEN: i64 = 434;
    pub const CLONE3: i64 = 435;
    pub const PIDFD_GETFD: i64 = 438;
    pub const MOUNT_SETATTR: i64 = 442;
    /// The x32 ABI marker bit.
    pub const X32_BIT: i64 = 0x4000_0000;
    /// i386 numbers (for `int 0x80`).
    pub const I386_GETPID: u32 = 20;
    pub const I386_UNSHARE: u32 = 310;
}

pub fn errno() -> i32 {
    // SAFETY: reading the thread's errno.
    unsafe { *libc::__errno_location() }
}

pub fn ename(e: i32) -> String {
    let s = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::ENOEXEC => "ENOEXEC",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::ETXTBSY => "ETXTBSY",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EPIPE => "EPIPE",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENOKEY => "ENOKEY",
        libc::EKEYREVOKED => "EKEYREVOKED",
        libc::EDQUOT => "EDQUOT",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::EPROTOTYPE => "EPROTOTYPE",
        libc::ENOPROTOOPT => "ENOPROTOOPT",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::ESOCKTNOSUPPORT => "ESOCKTNOSUPPORT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNRESET => "ECONNRESET",
        libc::EISCONN => "EISCONN",
        libc::ENOTCONN => "ENOTCONN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ESTALE => "ESTALE",
        libc::EUSERS => "EUSERS",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::ENOMEDIUM => "ENOMEDIUM",
        libc::EBADFD => "EBADFD",
        libc::ENOTBLK => "ENOTBLK",
        _ => return format!("errno {e}"),
    };
    s.to_owned()
}

pub fn signame(sig: i32) -> String {
    let s = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {sig}"),
    };
    s.to_owned()
}

/// Errors that say the machine ran short of something, not that the sandbox refused.
pub fn is_resource_error(e: i32) -> bool {
    matches!(e, libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EINTR | libc::EAGAIN)
}

pub fn cs(s: &str) -> CString {
    CString::new(s).unwrap_or_else(|_| CString::new("/nonexistent-nul-in-path").unwrap())
}

/// A raw syscall's -1/errno convention as a Result.
pub fn check(r: libc::c_long) -> Result<i64, i32> {
    if r == -1 {
        Err(errno())
    } else {
        Ok(r)
    }
}

macro_rules! syscall {
    ($nr:expr $(, $a:expr)* $(,)?) => {
        // SAFETY: every probe passes arguments that are valid for the syscall it names (pointers
        // to live buffers, or integers); the kernel validates the rest.
        $crate::sys::check(unsafe { libc::syscall($nr as libc::c_long $(, $a)*) })
    };
}
pub(crate) use syscall;

pub fn open(path: &str, flags: i32) -> Result<i32, i32> {
    let c = cs(path);
    // SAFETY: a valid NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o600) };
    if fd < 0 {
        Err(errno())
    } else {
        Ok(fd)
    }
}

pub fn close(fd: i32) {
    // SAFETY: closing a descriptor this process opened.
    unsafe { libc::close(fd) };
}

pub fn read_fd(fd: i32, max: usize) -> Result<Vec<u8>, i32> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while out.len() < max {
        let want = buf.len().min(max - out.len());
        // SAFETY: reading into a buffer we own.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), want) };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            if out.is_empty() {
                return Err(e);
            }
            break;
        }
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    Ok(out)
}

pub fn write_all(fd: i32, mut data: &[u8]) -> Result<(), i32> {
    while !data.is_empty() {
        // SAFETY: writing from a buffer we own.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// Read up to `max` bytes of a file (O_NONBLOCK so a device never blocks us).
pub fn read_file(path: &str, max: usize) -> Result<Vec<u8>, i32> {
    let fd = open(path, libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK)?;
    let r = read_fd(fd, max);
    close(fd);
    r
}

pub fn read_string(path: &str) -> Result<String, i32> {
    read_file(path, 4 << 20).map(|b| String::from_utf8_lossy(&b).into_owned())
}

pub fn stat(path: &str) -> Result<libc::stat, i32> {
    let c = cs(path);
    // SAFETY: stat into a zeroed struct we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::stat(c.as_ptr(), &mut st) } < 0 {
        Err(errno())
    } else {
        Ok(st)
    }
}

pub fn lstat(path: &str) -> Result<libc::stat, i32> {
    let c = cs(path);
    // SAFETY: as above.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::lstat(c.as_ptr(), &mut st) } < 0 {
        Err(errno())
    } else {
        Ok(st)
    }
}

pub fn fstat(fd: i32) -> Result<libc::stat, i32> {
    // SAFETY: as above.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        Err(errno())
    } else {
        Ok(st)
    }
}

pub fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub fn id_of(st: &libc::stat) -> (u64, u64) {
    (st.st_dev, st.st_ino)
}

pub fn readlink(path: &str) -> Result<String, i32> {
    let c = cs(path);
    let mut buf = vec![0u8; 4096];
    // SAFETY: readlink into a buffer we own, with its length.
    let n = unsafe { libc::readlink(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(errno());
    }
    buf.truncate(n as usize);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Names in a directory (without . and ..).
pub fn list_dir(path: &str) -> Result<Vec<String>, i32> {
    match std::fs::read_dir(path) {
        Ok(rd) => Ok(rd.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned())).collect()),
        Err(e) => Err(e.raw_os_error().unwrap_or(libc::EIO)),
    }
}

pub fn mkdir(path: &str, mode: u32) -> Result<(), i32> {
    let c = cs(path);
    // SAFETY: a valid path.
    if unsafe { libc::mkdir(c.as_ptr(), mode) } < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

pub fn rmdir(path: &str) {
    let c = cs(path);
    // SAFETY: a valid path.
    unsafe { libc::rmdir(c.as_ptr()) };
}

pub fn unlink(path: &str) {
    let c = cs(path);
    // SAFETY: a valid path.
    unsafe { libc::unlink(c.as_ptr()) };
}

pub fn getpid() -> i32 {
    // SAFETY: no arguments.
    unsafe { libc::getpid() }
}

/// A field such as `CapEff` from /proc/self/status (the text after the colon, trimmed).
pub fn status_field(status: &str, name: &str) -> Option<String> {
    status.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(|v| v.trim().to_owned()))
}

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone)]
#[allow(dead_code)]
pub struct MountEntry {
    pub id: u64,
    pub parent: u64,
    pub root: String,
    pub point: String,
    pub opts: String,
    pub fstype: String,
    pub source: String,
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') as u32 * 64 + (b[i + 2] - b'0') as u32 * 8 + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn mountinfo() -> Result<Vec<MountEntry>, i32> {
    let text = read_string("/proc/self/mountinfo")?;
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 6 || r.len() < 2 {
            continue;
        }
        out.push(MountEntry {
            id: l[0].parse().unwrap_or(0),
            parent: l[1].parse().unwrap_or(0),
            root: unescape(l[3]),
            point: unescape(l[4]),
            opts: l[5].to_owned(),
            fstype: r[0].to_owned(),
            source: unescape(r[1]),
        });
    }
    Ok(out)
}

/// How a throwaway child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(i32),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Exited(c) => write!(f, "exited {c}"),
            Ended::Signaled(s) => write!(f, "killed by {}", signame(*s)),
        }
    }
}

pub fn wait_pid(pid: i32) -> Ended {
    let mut st = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut st, 0) };
        if r < 0 && errno() == libc::EINTR {
            continue;
        }
        break;
    }
    if libc::WIFSIGNALED(st) {
        Ended::Signaled(libc::WTERMSIG(st))
    } else {
        Ended::Exited(libc::WEXITSTATUS(st))
    }
}

/// Run `f` in a forked child; it writes what it wants the parent to know into the fd it is
/// given. Returns how the child ended and everything it wrote. The process is single-threaded
/// at every call site, so the child may use the allocator.
pub fn in_child(f: impl FnOnce(i32)) -> Result<(Ended, Vec<u8>), i32> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 into an array of two.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(errno());
    }
    // SAFETY: fork in a single-threaded process.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = errno();
        close(fds[0]);
        close(fds[1]);
        return Err(e);
    }
    if pid == 0 {
        close(fds[0]);
        f(fds[1]);
        // SAFETY: leave without running the parent's exit handlers.
        unsafe { libc::_exit(0) }
    }
    close(fds[1]);
    let data = read_fd(fds[0], 1 << 20).unwrap_or_default();
    close(fds[0]);
    Ok((wait_pid(pid), data))
}

/// Send a short text from a child to its parent.
pub fn say(fd: i32, s: &str) {
    let _ = write_all(fd, s.as_bytes());
}

pub fn exit_now(code: i32) -> ! {
    // SAFETY: immediate exit of a forked child.
    unsafe { libc::_exit(code) }
}

/// The process's NoNewPrivs as the kernel reports it through prctl.
pub fn no_new_privs() -> i32 {
    // SAFETY: plain prctl query.
    unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) }
}

pub fn hexdump_short(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let s: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let s = s.trim().to_owned();
    if s.len() > 120 {
        format!("{}...", &s[..s.char_indices().take_while(|(i, _)| *i < 120).last().map(|(i, c)| i + c.len_utf8()).unwrap_or(0)])
    } else {
        s
    }
}
