//! Processes: the host process given by --host-pid, the sandbox's init, and environments.

use super::REFUSED;
use crate::sys::{self, ename, syscall};
use crate::{contained, error, escaped, note, Ctx, Res};

const PTRACE_SEIZE: i64 = 0x4206;

fn is_sandbox_comm(c: &str) -> bool {
    c == "isolate-init" || c.starts_with("escape-probe") || c.starts_with("setuid")
}

/// The --host-pid, unless missing or equal to a pid of this sandbox (then nothing can be decided).
fn host_pid(ctx: &Ctx) -> Result<i32, Res> {
    let Some(hp) = ctx.host_pid else { return Err(error!("no --host-pid given")) };
    if hp <= 1 {
        return Err(error!("--host-pid {hp} is not a usable host pid"));
    }
    // /proc shows this sandbox's pid namespace: a pid of that number here is one of ours, unless
    // the namespace leaks (and then its comm is the host process's).
    if let Ok(c) = sys::read_string(&format!("/proc/{hp}/comm")) {
        if is_sandbox_comm(c.trim()) {
            return Err(error!("pid {hp} is also a process of this sandbox ({}); pass a host pid not used inside", c.trim()));
        }
    }
    Ok(hp)
}

pub fn host_pid_invisible(ctx: &Ctx) -> Res {
    let hp = match host_pid(ctx) {
        Ok(p) => p,
        Err(r) => return r,
    };
    match sys::stat(&format!("/proc/{hp}")) {
        Err(libc::ENOENT) => contained!("/proc/{hp}: ENOENT"),
        Err(e) => contained!("/proc/{hp}: {}", ename(e)),
        Ok(_) => {
            let comm = sys::read_string(&format!("/proc/{hp}/comm")).unwrap_or_default();
            escaped!("/proc/{hp} exists inside ({})", comm.trim())
        }
    }
}

pub fn kill_host(ctx: &Ctx) -> Res {
    let hp = match host_pid(ctx) {
        Ok(p) => p,
        Err(r) => return r,
    };
    note("kill(host pid, 0)");
    // Signal 0: permission and existence check only, nothing is delivered.
    // SAFETY: kill with signal 0.
    let r = unsafe { libc::kill(hp, 0) };
    if r == 0 {
        return escaped!("kill({hp}, 0) succeeded: the host process is reachable");
    }
    match sys::errno() {
        e @ (libc::ESRCH | libc::EPERM) => contained!("kill({hp}, 0): {}", ename(e)),
        e => error!("kill({hp}, 0): {}", ename(e)),
    }
}

pub fn ptrace_host(ctx: &Ctx) -> Res {
    let hp = match host_pid(ctx) {
        Ok(p) => p,
        Err(r) => return r,
    };
    note("ptrace(PTRACE_SEIZE, host pid)");
    // SEIZE does not stop the tracee; this process exits right after, which detaches.
    match syscall!(sys::nr::PTRACE, PTRACE_SEIZE, hp as i64, 0i64, 0i64) {
        Ok(_) => escaped!("ptrace(PTRACE_SEIZE, {hp}) succeeded"),
        Err(e @ (libc::ESRCH | libc::EPERM)) => contained!("ptrace(PTRACE_SEIZE, {hp}): {}", ename(e)),
        Err(e) if REFUSED.contains(&e) => contained!("ptrace(PTRACE_SEIZE, {hp}): {}", ename(e)),
        Err(e) => error!("ptrace(PTRACE_SEIZE, {hp}): {}", ename(e)),
    }
}

pub fn process_vm_readv_host(ctx: &Ctx) -> Res {
    let hp = match host_pid(ctx) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut buf = [0u8; 8];
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let remote = libc::iovec { iov_base: 0x40_0000 as *mut libc::c_void, iov_len: 8 };
    note("process_vm_readv(host pid)");
    match syscall!(sys::nr::PROCESS_VM_READV, hp as i64, &local as *const libc::iovec, 1i64, &remote as *const libc::iovec, 1i64, 0i64) {
        Ok(n) => escaped!("process_vm_readv({hp}) read {n} bytes"),
        Err(e @ (libc::ESRCH | libc::EPERM | libc::EACCES | libc::ENOSYS)) => contained!("process_vm_readv({hp}): {}", ename(e)),
        // EFAULT: the access check passed and only the address was bad.
        Err(e) => escaped!("process_vm_readv({hp}): {} (past the access check)", ename(e)),
    }
}

pub fn pidfd_open_host(ctx: &Ctx) -> Res {
    let hp = match host_pid(ctx) {
        Ok(p) => p,
        Err(r) => return r,
    };
    note("pidfd_open(host pid)");
    match syscall!(sys::nr::PIDFD_OPEN, hp as i64, 0i64) {
        Ok(fd) => escaped!("pidfd_open({hp}) = fd {fd}: a handle on the host process"),
        Err(e @ (libc::ESRCH | libc::EPERM | libc::EACCES | libc::ENOSYS)) => contained!("pidfd_open({hp}): {}", ename(e)),
        Err(e) => error!("pidfd_open({hp}): {}", ename(e)),
    }
}

const NAMESPACES: &[(&str, i64)] = &[
    ("user", libc::CLONE_NEWUSER as i64),
    ("mnt", libc::CLONE_NEWNS as i64),
    ("pid", libc::CLONE_NEWPID as i64),
    ("net", libc::CLONE_NEWNET as i64),
    ("uts", libc::CLONE_NEWUTS as i64),
    ("ipc", libc::CLONE_NEWIPC as i64),
    ("cgroup", libc::CLONE_NEWCGROUP as i64),
    ("time", 0x80),
];

pub fn setns_host_ns(ctx: &Ctx) -> Res {
    let hp = match host_pid(ctx) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut seen = Vec::new();
    for (ns, _) in NAMESPACES {
        let path = format!("/proc/{hp}/ns/{ns}");
        note(&format!("open {path}"));
        match sys::open(&path, libc::O_RDONLY) {
            Err(e) => seen.push(format!("{ns}: {}", ename(e))),
            Ok(fd) => {
                let theirs = sys::fstat(fd).map(|s| s.st_ino).unwrap_or(0);
                let ours = sys::stat(&format!("/proc/self/ns/{ns}")).map(|s| s.st_ino).unwrap_or(1);
                if theirs == ours {
                    sys::close(fd);
                    seen.push(format!("{ns}: same as ours"));
                    continue;
                }
                note(&format!("setns({path})"));
                let r = syscall!(sys::nr::SETNS, fd as i64, 0i64);
                sys::close(fd);
                return escaped!(
                    "opened the host's {ns} namespace {path} (setns: {})",
                    match r {
                        Ok(_) => "succeeded".to_owned(),
                        Err(e) => ename(e),
                    }
                );
            }
        }
    }
    contained!("{}", seen.join(", "))
}

pub fn setns_own_ns(_ctx: &Ctx) -> Res {
    let mut seen = Vec::new();
    for (ns, _) in NAMESPACES {
        let path = format!("/proc/self/ns/{ns}");
        let fd = match sys::open(&path, libc::O_RDONLY) {
            Ok(fd) => fd,
            Err(e) => {
                seen.push(format!("{ns}: open {}", ename(e)));
                continue;
            }
        };
        note(&format!("setns({path})"));
        let r = syscall!(sys::nr::SETNS, fd as i64, 0i64);
        sys::close(fd);
        match r {
            Ok(_) => return escaped!("setns into its own {ns} namespace succeeded (CAP_SYS_ADMIN there)"),
            Err(e) if sys::is_resource_error(e) => return error!("setns {ns}: {}", ename(e)),
            Err(e) => seen.push(format!("{ns}: {}", ename(e))),
        }
    }
    contained!("{}", seen.join(", "))
}

pub fn proc1_is_init(_ctx: &Ctx) -> Res {
    match sys::read_string("/proc/1/comm") {
        Ok(c) if c.trim() == "isolate-init" => contained!("pid 1 is isolate-init"),
        Ok(c) => escaped!("pid 1 is {:?}, not the sandbox's init", c.trim()),
        Err(e) => error!("/proc/1/comm: {}", ename(e)),
    }
}

pub fn ptrace_init(_ctx: &Ctx) -> Res {
    note("ptrace(PTRACE_SEIZE, 1)");
    // A hostile command that traces the init could forge its reports to the helper.
    match syscall!(sys::nr::PTRACE, PTRACE_SEIZE, 1i64, 0i64, 0i64) {
        Ok(_) => escaped!("ptrace(PTRACE_SEIZE, 1) succeeded: the sandbox's init can be taken over"),
        Err(e) if REFUSED.contains(&e) => contained!("ptrace(PTRACE_SEIZE, 1): {}", ename(e)),
        Err(e) => error!("ptrace(PTRACE_SEIZE, 1): {}", ename(e)),
    }
}

pub fn pidfd_getfd_init(_ctx: &Ctx) -> Res {
    note("pidfd_open(1)");
    let pidfd = match syscall!(sys::nr::PIDFD_OPEN, 1i64, 0i64) {
        Ok(fd) => fd,
        Err(e) if REFUSED.contains(&e) => return contained!("pidfd_open(1): {}", ename(e)),
        Err(e) => return error!("pidfd_open(1): {}", ename(e)),
    };
    let mut errs = Vec::new();
    for n in 0..64i64 {
        note(&format!("pidfd_getfd(init, {n})"));
        match syscall!(sys::nr::PIDFD_GETFD, pidfd, n, 0i64) {
            Ok(fd) => {
                let what = sys::readlink(&format!("/proc/self/fd/{fd}")).unwrap_or_default();
                return escaped!("took the init's fd {n} ({what})");
            }
            // EBADF comes only after the ptrace access check passed.
            Err(libc::EBADF) => errs.push(n),
            Err(e) if REFUSED.contains(&e) => {
                if errs.is_empty() {
                    return contained!("pidfd_getfd(init, {n}): {}", ename(e));
                }
                break;
            }
            Err(e) => return error!("pidfd_getfd(init, {n}): {}", ename(e)),
        }
    }
    escaped!("pidfd_getfd on the init got past the access check (EBADF for fds {errs:?})")
}

pub fn init_fds(_ctx: &Ctx) -> Res {
    match sys::list_dir("/proc/1/fd") {
        Err(e) => contained!("/proc/1/fd: {}", ename(e)),
        Ok(names) => {
            let targets: Vec<String> = names.iter().map(|n| format!("{n}->{}", sys::readlink(&format!("/proc/1/fd/{n}")).unwrap_or_else(ename))).collect();
            escaped!("the init's fds are listable: {}", targets.join(" "))
        }
    }
}

pub fn helper_exe_write(_ctx: &Ctx) -> Res {
    // runc CVE-2019-5736: the init is a fork of the helper, so /proc/1/exe is the helper binary
    // on the host. Opened for writing and closed at once; never written.
    note("open(/proc/1/exe, O_WRONLY)");
    let direct = match sys::open("/proc/1/exe", libc::O_WRONLY | libc::O_NOCTTY | libc::O_NONBLOCK) {
        Ok(fd) => {
            sys::close(fd);
            return escaped!("/proc/1/exe (the helper binary) opened for writing");
        }
        Err(e) if sys::is_resource_error(e) => return error!("open /proc/1/exe: {}", ename(e)),
        Err(e) => ename(e),
    };
    note("open(/proc/1/exe, O_PATH) and reopen for writing");
    let via_path = match sys::open("/proc/1/exe", libc::O_PATH) {
        Err(e) => ename(e),
        Ok(fd) => {
            let r = sys::open(&format!("/proc/self/fd/{fd}"), libc::O_WRONLY | libc::O_NOCTTY | libc::O_NONBLOCK);
            sys::close(fd);
            match r {
                Ok(w) => {
                    sys::close(w);
                    return escaped!("/proc/1/exe reopened for writing through an O_PATH fd");
                }
                Err(e) => format!("O_PATH ok, reopen {}", ename(e)),
            }
        }
    };
    contained!("O_WRONLY: {direct}; O_PATH: {via_path}")
}

fn env_name(ctx: &Ctx) -> Result<&str, Res> {
    match ctx.host_env.as_deref() {
        Some(n) if !n.is_empty() && !n.contains('=') => Ok(n),
        _ => Err(error!("no usable --host-env NAME given")),
    }
}

fn environ_has(block: &[u8], name: &str) -> bool {
    let prefix = format!("{name}=");
    block.split(|b| *b == 0).any(|e| e.starts_with(prefix.as_bytes()))
}

pub fn host_env(ctx: &Ctx) -> Res {
    let name = match env_name(ctx) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let own: Vec<String> = std::env::vars_os().map(|(k, _)| k.to_string_lossy().into_owned()).collect();
    if own.iter().any(|k| k == name) {
        return escaped!("{name} is in the environment");
    }
    let block = sys::read_file("/proc/self/environ", 1 << 20).unwrap_or_default();
    if environ_has(&block, name) {
        return escaped!("{name} is in /proc/self/environ");
    }
    contained!("{name} not set; the environment holds {} variables: {}", own.len(), own.join(","))
}

pub fn proc1_environ(ctx: &Ctx) -> Res {
    let name = match env_name(ctx) {
        Ok(n) => n,
        Err(r) => return r,
    };
    match sys::read_file("/proc/1/environ", 1 << 20) {
        Err(e) => contained!("/proc/1/environ: {}", ename(e)),
        Ok(b) if environ_has(&b, name) => escaped!("{name} is in /proc/1/environ"),
        Ok(b) => contained!("/proc/1/environ readable ({} bytes) but without {name}", b.len()),
    }
}

pub fn proc_environ_scan(ctx: &Ctx) -> Res {
    let name = match env_name(ctx) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let pids = match sys::list_dir("/proc") {
        Ok(v) => v.into_iter().filter(|n| n.bytes().all(|b| b.is_ascii_digit())).collect::<Vec<_>>(),
        Err(e) => return error!("/proc: {}", ename(e)),
    };
    let mut readable = 0;
    for p in &pids {
        if let Ok(b) = sys::read_file(&format!("/proc/{p}/environ"), 1 << 20) {
            readable += 1;
            if environ_has(&b, name) {
                return escaped!("{name} is in /proc/{p}/environ");
            }
        }
    }
    contained!("{} pids visible, {readable} environments readable, none with {name}", pids.len())
}
