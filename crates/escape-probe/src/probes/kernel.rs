//! Kernel knobs, kernel memory and logs, cgroupfs, modules, kexec and other privileged calls.
//! Nothing here ever writes a knob or loads anything: files are opened and closed, and calls get
//! arguments the kernel rejects right after its permission check.

use super::{gate, REFUSED};
use crate::sys::{self, ename, syscall};
use crate::{contained, error, escaped, note, Ctx, Res};

/// Open each path for writing and close it at once, never writing.
fn open_for_write(paths: &[&str]) -> Res {
    let mut seen = Vec::new();
    for p in paths {
        note(&format!("open({p}, O_WRONLY)"));
        match sys::open(p, libc::O_WRONLY | libc::O_NOCTTY | libc::O_NONBLOCK) {
            Ok(fd) => {
                sys::close(fd);
                return escaped!("{p} opened for writing (closed without writing)");
            }
            Err(e) if sys::is_resource_error(e) => return error!("{p}: {} (undecided)", ename(e)),
            Err(e) => seen.push(format!("{p}: {}", ename(e))),
        }
    }
    contained!("{}", seen.join(", "))
}

pub fn sysrq_trigger(_ctx: &Ctx) -> Res {
    open_for_write(&["/proc/sysrq-trigger"])
}

pub fn core_pattern(_ctx: &Ctx) -> Res {
    open_for_write(&["/proc/sys/kernel/core_pattern"])
}

pub fn modprobe_path(_ctx: &Ctx) -> Res {
    open_for_write(&["/proc/sys/kernel/modprobe"])
}

pub fn uevent_helper(_ctx: &Ctx) -> Res {
    // The same knob twice: sysfs and its sysctl alias.
    open_for_write(&["/sys/kernel/uevent_helper", "/proc/sys/kernel/hotplug"])
}

pub fn drop_caches(_ctx: &Ctx) -> Res {
    open_for_write(&["/proc/sys/vm/drop_caches"])
}

pub fn binfmt_misc(_ctx: &Ctx) -> Res {
    open_for_write(&["/proc/sys/fs/binfmt_misc/register", "/proc/sys/fs/binfmt_misc/status"])
}

/// An fd that is really the procfs file, not a mask bound over it (/dev/null, an empty file).
fn is_real_proc_file(fd: i32) -> bool {
    let Ok(st) = sys::fstat(fd) else { return false };
    let Ok(proc_st) = sys::stat("/proc/self") else { return false };
    st.st_dev == proc_st.st_dev && st.st_mode & libc::S_IFMT == libc::S_IFREG
}

pub fn proc_kcore(_ctx: &Ctx) -> Res {
    note("open /proc/kcore");
    match sys::open("/proc/kcore", libc::O_RDONLY) {
        Err(e) => contained!("/proc/kcore: {}", ename(e)),
        Ok(fd) => {
            // Offset 0 is the generated ELF header: reading it touches no kernel memory.
            let r = sys::read_fd(fd, 64);
            let real = is_real_proc_file(fd);
            sys::close(fd);
            match r {
                Ok(b) if !b.is_empty() => escaped!("read {} bytes of /proc/kcore", b.len()),
                Ok(_) if real => escaped!("/proc/kcore opened (read nothing)"),
                Ok(_) => contained!("/proc/kcore is masked (opens, reads nothing)"),
                Err(e) => contained!("/proc/kcore opened but read: {}", ename(e)),
            }
        }
    }
}

fn open_only(paths: &[&str]) -> Res {
    let mut seen = Vec::new();
    for p in paths {
        note(&format!("open {p}"));
        match sys::open(p, libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK) {
            Ok(fd) => {
                sys::close(fd);
                return escaped!("{p} opened");
            }
            Err(e) => seen.push(format!("{p}: {}", ename(e))),
        }
    }
    contained!("{}", seen.join(", "))
}

pub fn dev_mem(_ctx: &Ctx) -> Res {
    open_only(&["/dev/mem", "/dev/kmem"])
}

pub fn dev_port(_ctx: &Ctx) -> Res {
    open_only(&["/dev/port"])
}

pub fn dev_kmsg(_ctx: &Ctx) -> Res {
    note("open /dev/kmsg");
    let r_err = match sys::open("/dev/kmsg", libc::O_RDONLY | libc::O_NONBLOCK) {
        Ok(fd) => {
            // Each reader of /dev/kmsg has its own position: reading consumes nothing.
            let r = sys::read_fd(fd, 512);
            sys::close(fd);
            return match r {
                Ok(b) if !b.is_empty() => escaped!("read the kernel log from /dev/kmsg: {}", sys::hexdump_short(&b)),
                _ => escaped!("/dev/kmsg opened for reading"),
            };
        }
        Err(e) if sys::is_resource_error(e) && e != libc::EAGAIN => return error!("/dev/kmsg: {}", ename(e)),
        Err(e) => e,
    };
    note("open /dev/kmsg for writing");
    match sys::open("/dev/kmsg", libc::O_WRONLY | libc::O_NONBLOCK) {
        Ok(fd) => {
            sys::close(fd);
            escaped!("/dev/kmsg opened for writing (could inject kernel log lines)")
        }
        Err(e) => contained!("/dev/kmsg read: {}, write: {}", ename(r_err), ename(e)),
    }
}

pub fn proc_kmsg(_ctx: &Ctx) -> Res {
    // Opening /proc/kmsg is the syslog permission check; reading would consume the log, so never.
    note("open /proc/kmsg");
    match sys::open("/proc/kmsg", libc::O_RDONLY | libc::O_NONBLOCK) {
        Err(e) => contained!("/proc/kmsg: {}", ename(e)),
        Ok(fd) => {
            let real = is_real_proc_file(fd);
            sys::close(fd);
            if real {
                escaped!("/proc/kmsg opened (the kernel log is readable)")
            } else {
                contained!("/proc/kmsg is masked")
            }
        }
    }
}

pub fn kallsyms(_ctx: &Ctx) -> Res {
    match sys::read_file("/proc/kallsyms", 64 << 20) {
        Err(e) => contained!("/proc/kallsyms: {}", ename(e)),
        Ok(b) if b.is_empty() => contained!("/proc/kallsyms is empty (masked)"),
        Ok(b) => {
            let text = String::from_utf8_lossy(&b);
            let mut n = 0;
            for line in text.lines() {
                let Some(addr) = line.split_whitespace().next() else { continue };
                n += 1;
                if let Ok(v) = u64::from_str_radix(addr, 16) {
                    if v != 0 {
                        return escaped!("/proc/kallsyms shows real addresses: {}", line.trim());
                    }
                }
            }
            contained!("/proc/kallsyms: {n} symbols, every address zero")
        }
    }
}

pub fn syslog(_ctx: &Ctx) -> Res {
    const SYSLOG_ACTION_READ_ALL: i64 = 3;
    let mut buf = vec![0u8; 4096];
    note("syslog(SYSLOG_ACTION_READ_ALL)");
    gate("syslog(SYSLOG_ACTION_READ_ALL)", syscall!(sys::nr::SYSLOG, SYSLOG_ACTION_READ_ALL, buf.as_mut_ptr(), buf.len()), REFUSED)
}

// ---------------------------------------------------------------------------------------------
// cgroupfs

pub fn cgroup_mount(_ctx: &Ctx) -> Res {
    let dir = format!("/tmp/.escape-cgroup-{}", sys::getpid());
    if let Err(e) = sys::mkdir(&dir, 0o755) {
        return error!("mkdir {dir}: {}", ename(e));
    }
    let c = sys::cs(&dir);
    let mut errs = Vec::new();
    let mut result = None;
    for (fstype, data) in [("cgroup2", ""), ("cgroup", "pids"), ("cgroup", "memory"), ("cgroup", "none,name=escape-probe")] {
        note(&format!("mount -t {fstype} -o {data} {dir}"));
        let f = sys::cs(fstype);
        let d = sys::cs(data);
        // SAFETY: NUL-terminated strings; unmounted right away if it worked.
        let r = unsafe { libc::mount(f.as_ptr(), c.as_ptr(), f.as_ptr(), libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, d.as_ptr().cast()) };
        if r == 0 {
            // SAFETY: unmounting what we just mounted.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            result = Some(escaped!("mounted {fstype} ({data}) on {dir}"));
            break;
        }
        let e = sys::errno();
        if !REFUSED.contains(&e) {
            result = Some(gate(&format!("mount {fstype} ({data})"), Err(e), REFUSED));
            break;
        }
        errs.push(format!("{fstype} {data}: {}", ename(e)));
    }
    sys::rmdir(&dir);
    result.unwrap_or_else(|| contained!("{}", errs.join(", ")))
}

pub fn cgroup_writable(_ctx: &Ctx) -> Res {
    let mounts = match sys::mountinfo() {
        Ok(m) => m,
        Err(e) => return error!("/proc/self/mountinfo: {}", ename(e)),
    };
    let own: Vec<String> =
        sys::read_string("/proc/self/cgroup").unwrap_or_default().lines().filter_map(|l| l.splitn(3, ':').nth(2).map(|p| p.to_owned())).collect();
    let cg: Vec<&sys::MountEntry> = mounts.iter().filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2").collect();
    if cg.is_empty() && sys::stat("/sys/fs/cgroup/cgroup.procs").is_err() {
        return contained!("no cgroup filesystem mounted");
    }
    let mut points: Vec<String> = cg.iter().map(|m| m.point.clone()).collect();
    if points.is_empty() {
        points.push("/sys/fs/cgroup".into());
    }
    let mut checked = Vec::new();
    for mp in &points {
        let mut dirs = vec![mp.clone()];
        for p in &own {
            dirs.push(format!("{}{}", mp.trim_end_matches('/'), p));
        }
        for d in dirs {
            let c = sys::cs(&d);
            // SAFETY: access on a valid path.
            if unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0 {
                return escaped!("{d} (cgroupfs) is writable");
            }
            let procs = format!("{}/cgroup.procs", d.trim_end_matches('/'));
            if let Ok(fd) = sys::open(&procs, libc::O_WRONLY | libc::O_NONBLOCK) {
                sys::close(fd);
                return escaped!("{procs} opened for writing");
            }
            checked.push(d);
        }
    }
    contained!("cgroupfs mounted read-only or not writable: {}", checked.join(", "))
}

// ---------------------------------------------------------------------------------------------
// modules, kexec and other privileged calls

pub fn init_module(_ctx: &Ctx) -> Res {
    note("init_module(NULL, 0, \"\")");
    // An empty image: even past the CAP_SYS_MODULE check nothing could load.
    gate("init_module(empty image)", syscall!(sys::nr::INIT_MODULE, std::ptr::null::<u8>(), 0usize, c"".as_ptr()), REFUSED)
}

pub fn finit_module(_ctx: &Ctx) -> Res {
    note("finit_module(-1)");
    gate("finit_module(fd -1)", syscall!(sys::nr::FINIT_MODULE, -1i64, c"".as_ptr(), 0i64), REFUSED)
}

pub fn delete_module(_ctx: &Ctx) -> Res {
    note("delete_module(escape_probe_none)");
    gate("delete_module(a module that does not exist)", syscall!(sys::nr::DELETE_MODULE, c"escape_probe_none".as_ptr(), libc::O_NONBLOCK as i64), REFUSED)
}

pub fn kexec_load(_ctx: &Ctx) -> Res {
    // 17 segments (more than KEXEC_SEGMENT_MAX) and a foreign architecture: EINVAL right after
    // the CAP_SYS_BOOT check, so nothing is ever loaded or unloaded.
    note("kexec_load(invalid)");
    gate("kexec_load(invalid arguments)", syscall!(sys::nr::KEXEC_LOAD, 0i64, 17i64, std::ptr::null::<u8>(), 0x8000_0000u64), REFUSED)
}

pub fn kexec_file_load(_ctx: &Ctx) -> Res {
    // Only an unknown flag bit: EINVAL right after the permission check.
    note("kexec_file_load(invalid flags)");
    gate("kexec_file_load(invalid flags)", syscall!(sys::nr::KEXEC_FILE_LOAD, -1i64, -1i64, 0i64, std::ptr::null::<u8>(), 0x8000_0000u64), REFUSED)
}

pub fn reboot(_ctx: &Ctx) -> Res {
    // Wrong magic numbers: EINVAL right after the CAP_SYS_BOOT check, never a reboot.
    note("reboot(bad magic)");
    gate("reboot(bad magic)", syscall!(sys::nr::REBOOT, 0xdead_beefu32 as i64, 0i64, 0i64, std::ptr::null::<u8>()), REFUSED)
}

pub fn ioport(_ctx: &Ctx) -> Res {
    note("iopl(3)");
    let a = syscall!(sys::nr::IOPL, 3i64);
    if a.is_ok() {
        let _ = syscall!(sys::nr::IOPL, 0i64);
        return escaped!("iopl(3) succeeded: direct port I/O");
    }
    note("ioperm(0x80, 1, 1)");
    let b = syscall!(sys::nr::IOPERM, 0x80i64, 1i64, 1i64);
    if b.is_ok() {
        let _ = syscall!(sys::nr::IOPERM, 0x80i64, 1i64, 0i64);
        return escaped!("ioperm(0x80) succeeded: direct port I/O");
    }
    match (a, b) {
        (Err(x), Err(y)) if REFUSED.contains(&x) && REFUSED.contains(&y) => contained!("iopl: {}; ioperm: {}", ename(x), ename(y)),
        (Err(x), Err(y)) => error!("iopl: {}; ioperm: {}", ename(x), ename(y)),
        _ => unreachable!(),
    }
}

pub fn swapon(_ctx: &Ctx) -> Res {
    note("swapon(nonexistent)");
    gate("swapon(a path that does not exist)", syscall!(sys::nr::SWAPON, c"/nonexistent-escape-probe".as_ptr(), 0i64), REFUSED)
}

pub fn acct(_ctx: &Ctx) -> Res {
    note("acct(nonexistent)");
    gate("acct(a path that does not exist)", syscall!(sys::nr::ACCT, c"/nonexistent-escape-probe".as_ptr()), REFUSED)
}
