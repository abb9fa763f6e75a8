//! Privilege (capabilities, no_new_privs, setuid, keyrings) and the syscall surface (non-native
//! ABIs, clone3, io_uring, userfaultfd, bpf, perf, personality, scheduling).

use super::{gate, REFUSED};
use crate::sys::{self, ename, syscall, Ended};
use crate::{contained, error, escaped, note, Ctx, Res};

// ---------------------------------------------------------------------------------------------
// capabilities and no_new_privs

const CAP_FIELDS: &[&str] = &["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"];

pub fn caps_zero(_ctx: &Ctx) -> Res {
    let status = match sys::read_string("/proc/self/status") {
        Ok(s) => s,
        Err(e) => return error!("/proc/self/status: {}", ename(e)),
    };
    let mut nonzero = Vec::new();
    for f in CAP_FIELDS {
        match sys::status_field(&status, f) {
            Some(v) if u64::from_str_radix(&v, 16) == Ok(0) => {}
            Some(v) => nonzero.push(format!("{f}={v}")),
            None => return error!("{f} missing from /proc/self/status"),
        }
    }
    // And what capget says, in case /proc lied.
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    let h = Header { version: 0x2008_0522, pid: 0 };
    let mut data = [0u32; 6];
    if syscall!(sys::nr::CAPGET, &h as *const Header, data.as_mut_ptr()).is_ok() && data.iter().any(|w| *w != 0) {
        nonzero.push(format!("capget={data:x?}"));
    }
    if nonzero.is_empty() {
        contained!("every capability set is empty")
    } else {
        escaped!("capabilities held: {}", nonzero.join(" "))
    }
}

pub fn capset_raise(_ctx: &Ctx) -> Res {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    let h = Header { version: 0x2008_0522, pid: 0 };
    // effective, permitted, inheritable for caps 0-31, then 32-63: ask for all of them.
    let data = [u32::MAX; 6];
    note("capset(all)");
    let r = syscall!(sys::nr::CAPSET, &h as *const Header, data.as_ptr());
    if r.is_ok() {
        return escaped!("capset raised every capability");
    }
    // CAP_SYS_ADMIN alone.
    let mut one = [0u32; 6];
    one[0] = 1 << 21;
    one[1] = 1 << 21;
    let r2 = syscall!(sys::nr::CAPSET, &h as *const Header, one.as_ptr());
    if r2.is_ok() {
        return escaped!("capset raised CAP_SYS_ADMIN");
    }
    note("prctl(PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE)");
    // SAFETY: plain prctl with integers.
    let a =
        unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong, 10 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    let ae = sys::errno();
    if a == 0 {
        return escaped!("raised the ambient CAP_NET_BIND_SERVICE");
    }
    match (r, r2) {
        (Err(x), Err(y)) => contained!("capset(all): {}; capset(CAP_SYS_ADMIN): {}; ambient raise: {}", ename(x), ename(y), ename(ae)),
        _ => unreachable!(),
    }
}

/// What `path --report-euid` printed, run in a child with stdout to a pipe.
fn exec_report(path: &str) -> Result<(Ended, String), String> {
    let p = path.to_owned();
    let r = sys::in_child(move |out| {
        let c = sys::cs(&p);
        let arg = c"--report-euid";
        let argv = [c.as_ptr(), arg.as_ptr(), std::ptr::null()];
        let envp: [*const libc::c_char; 1] = [std::ptr::null()];
        // SAFETY: dup2 onto stdout, then execve with NUL-terminated vectors.
        unsafe {
            libc::dup2(out, 1);
            libc::execve(c.as_ptr(), argv.as_ptr(), envp.as_ptr());
        }
        sys::say(out, &format!("EXECFAIL {}\n", sys::errno()));
        sys::exit_now(127);
    });
    match r {
        Err(e) => Err(format!("fork: {}", ename(e))),
        Ok((ended, data)) => {
            let text = String::from_utf8_lossy(&data).into_owned();
            if let Some(rest) = text.trim().strip_prefix("EXECFAIL ") {
                return Err(format!("execve {path}: {}", ename(rest.trim().parse().unwrap_or(0))));
            }
            Ok((ended, text))
        }
    }
}

/// A field of the --report-euid JSON line (numbers and strings, no nesting).
fn field(json: &str, key: &str) -> Option<String> {
    let k = format!("\"{key}\":");
    let start = json.find(&k)? + k.len();
    let rest = &json[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim().trim_matches('"').to_owned())
}

fn hex_zero(v: &Option<String>) -> bool {
    v.as_deref().and_then(|s| u64::from_str_radix(s, 16).ok()) == Some(0)
}

pub fn caps_after_exec(_ctx: &Ctx) -> Res {
    // Root (uid 0 inside) gains the bounding set's caps at every execve unless they are gone.
    note("execve(/proc/self/exe --report-euid)");
    match exec_report("/proc/self/exe") {
        Err(e) => error!("{e}"),
        Ok((ended, out)) => {
            if !out.contains("\"euid\"") {
                return error!("re-exec {ended} without a report: {}", sys::hexdump_short(out.as_bytes()));
            }
            let bad: Vec<String> = ["capinh", "capprm", "capeff", "capbnd", "capamb"]
                .iter()
                .filter(|k| !hex_zero(&field(&out, k)))
                .map(|k| format!("{k}={}", field(&out, k).unwrap_or_default()))
                .collect();
            if bad.is_empty() {
                contained!("after execve as euid {}: every capability set empty", field(&out, "euid").unwrap_or_default())
            } else {
                escaped!("after execve: {}", bad.join(" "))
            }
        }
    }
}

pub fn no_new_privs(_ctx: &Ctx) -> Res {
    let p = sys::no_new_privs();
    let status = sys::read_string("/proc/self/status").unwrap_or_default();
    let s = sys::status_field(&status, "NoNewPrivs").unwrap_or_else(|| "?".into());
    if p == 1 && s == "1" {
        contained!("PR_GET_NO_NEW_PRIVS = 1, NoNewPrivs: 1")
    } else {
        escaped!("no_new_privs is off (prctl {p}, status {s})")
    }
}

pub fn setuid_fixture(ctx: &Ctx) -> Res {
    let Some(path) = ctx.setuid_fixture.as_deref() else { return error!("no --setuid-fixture given") };
    // SAFETY: no arguments.
    let my_euid = unsafe { libc::geteuid() };
    let own_evidence = |why: String| -> Res {
        let p = sys::no_new_privs();
        let status = sys::read_string("/proc/self/status").unwrap_or_default();
        let s = sys::status_field(&status, "NoNewPrivs").unwrap_or_default();
        if p == 1 && s == "1" {
            contained!("fixture unavailable ({why}); own evidence: no_new_privs is 1, so no setuid or file-capability execve can raise privileges")
        } else {
            escaped!("fixture unavailable ({why}) and no_new_privs is off (prctl {p}, status {s})")
        }
    };
    let st = match sys::stat(path) {
        Ok(st) => st,
        Err(e) => return own_evidence(format!("{path}: {}", ename(e))),
    };
    let mode = st.st_mode & 0o7777;
    let desc = format!("{path} mode {mode:o} owner uid {} inside", st.st_uid);
    note(&format!("execve({path} --report-euid)"));
    match exec_report(path) {
        Err(e) => own_evidence(format!("{desc}: {e}")),
        Ok((ended, out)) => {
            let Some(euid) = field(&out, "euid") else {
                return error!("the fixture {ended} without a report: {}", sys::hexdump_short(out.as_bytes()));
            };
            let capeff = field(&out, "capeff");
            let capprm = field(&out, "capprm");
            let nnp = field(&out, "nnp").unwrap_or_default();
            let rose = euid != my_euid.to_string() || !hex_zero(&capeff) || !hex_zero(&capprm) || nnp != "1";
            let what = format!("euid {euid} (ours {my_euid}), CapEff {}, CapPrm {}, NoNewPrivs {nnp}", capeff.unwrap_or_default(), capprm.unwrap_or_default());
            if rose {
                escaped!("fixture ran ({desc}): {what}")
            } else {
                contained!("fixture ran ({desc}): {what}")
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// keyrings

const KEYCTL_GET_KEYRING_ID: i64 = 0;
const KEYCTL_INVALIDATE: i64 = 21;
const KEY_SPEC_SESSION_KEYRING: i64 = -3;
const KEY_SPEC_USER_KEYRING: i64 = -4;

pub fn keyring_add_key(_ctx: &Ctx) -> Res {
    let payload = b"x";
    note("add_key(user, escape-probe, session keyring)");
    let r = syscall!(sys::nr::ADD_KEY, c"user".as_ptr(), c"escape-probe".as_ptr(), payload.as_ptr(), payload.len(), KEY_SPEC_SESSION_KEYRING);
    if let Ok(id) = r {
        let _ = syscall!(sys::nr::KEYCTL, KEYCTL_INVALIDATE, id);
        return escaped!("add_key put key {id} into the session keyring (invalidated again)");
    }
    gate("add_key", r, REFUSED)
}

pub fn keyctl_user_keyring(_ctx: &Ctx) -> Res {
    note("keyctl(KEYCTL_GET_KEYRING_ID, user keyring)");
    gate("keyctl(GET_KEYRING_ID, @u)", syscall!(sys::nr::KEYCTL, KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING, 0i64), REFUSED)
}

pub fn keyring_session_shared(ctx: &Ctx) -> Res {
    let Some(host) = ctx.host_keyring else { return error!("no --host-keyring given (the caller's session keyring, from --report-keyring)") };
    note("keyctl(KEYCTL_GET_KEYRING_ID, session keyring)");
    match syscall!(sys::nr::KEYCTL, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0i64) {
        Err(e) if REFUSED.contains(&e) => contained!("keyctl: {}", ename(e)),
        Err(e) => error!("keyctl(GET_KEYRING_ID, @s): {}", ename(e)),
        Ok(id) if host > 0 && id == host => escaped!("the session keyring is the caller's own (serial {id}): its keys are possessed inside"),
        Ok(id) if host > 0 => contained!("a session keyring of its own (serial {id}, the caller's is {host})"),
        Ok(id) => error!("the caller had no session keyring to compare with ({host}); ours is {id}"),
    }
}

// ---------------------------------------------------------------------------------------------
// non-native ABIs

/// One i386 system call through `int 0x80`: returns eax (a result or -errno).
fn int80(nr: u32, arg1: u32) -> i64 {
    let ret: u32;
    // SAFETY: `int 0x80` only reads eax/ebx here and returns in eax; r8-r11 are clobbered by the
    // compat entry; rbx (reserved by LLVM) is swapped in and out around the instruction.
    unsafe {
        std::arch::asm!(
            "xchg rbx, {a1}",
            "int 0x80",
            "xchg rbx, {a1}",
            a1 = inout(reg) arg1 as u64 => _,
            inlateout("eax") nr => ret,
            lateout("r8") _, lateout("r9") _, lateout("r10") _, lateout("r11") _,
            options(nostack),
        );
    }
    ret as i32 as i64
}

/// Run `f` in a child and read back one number. A child killed by a signal (seccomp's SIGSYS, or
/// SIGSEGV when the kernel has no i386 entry) gives Err(signal).
fn child_number(f: impl FnOnce() -> i64) -> Result<Result<i64, i32>, String> {
    match sys::in_child(move |out| {
        let v = f();
        // SAFETY: getpid has no arguments.
        let me = unsafe { libc::getpid() };
        sys::say(out, &format!("{v} {me}"));
    }) {
        Err(e) => Err(format!("fork: {}", ename(e))),
        Ok((Ended::Signaled(sig), _)) => Ok(Err(sig)),
        Ok((ended, data)) => {
            let t = String::from_utf8_lossy(&data).into_owned();
            let mut it = t.split_whitespace();
            match (it.next().and_then(|v| v.parse::<i64>().ok()), it.next().and_then(|v| v.parse::<i64>().ok())) {
                (Some(v), Some(pid)) => Ok(Ok(if v == pid { i64::MAX } else { v })),
                _ => Err(format!("the child {ended} without a result")),
            }
        }
    }
}

pub fn i386_int80_getpid(_ctx: &Ctx) -> Res {
    note("int 0x80 getpid (i386 ABI) in a child");
    match child_number(|| int80(sys::nr::I386_GETPID, 0)) {
        Err(e) => error!("{e}"),
        Ok(Err(sig)) => contained!("the child was killed by {} at int 0x80", sys::signame(sig)),
        Ok(Ok(i64::MAX)) => escaped!("getpid through int 0x80 (i386 ABI) returned the pid"),
        Ok(Ok(v)) if v < 0 => contained!("int 0x80 getpid: {}", ename(-v as i32)),
        Ok(Ok(v)) => escaped!("int 0x80 getpid returned {v} (the i386 ABI is reachable)"),
    }
}

pub fn i386_int80_unshare(_ctx: &Ctx) -> Res {
    note("int 0x80 unshare(CLONE_NEWUSER) (i386 ABI) in a child");
    match child_number(|| int80(sys::nr::I386_UNSHARE, libc::CLONE_NEWUSER as u32)) {
        Err(e) => error!("{e}"),
        Ok(Err(sig)) => contained!("the child was killed by {} at int 0x80", sys::signame(sig)),
        Ok(Ok(0)) => escaped!("unshare(CLONE_NEWUSER) through int 0x80 (i386 ABI) succeeded"),
        Ok(Ok(v)) if v < 0 => contained!("int 0x80 unshare: {}", ename(-v as i32)),
        Ok(Ok(v)) => escaped!("int 0x80 unshare returned {v}"),
    }
}

pub fn x32_getpid(_ctx: &Ctx) -> Res {
    note("syscall(__X32_SYSCALL_BIT | getpid) in a child");
    match child_number(|| match syscall!(sys::nr::X32_BIT | sys::nr::GETPID) {
        Ok(v) => v,
        Err(e) => -(e as i64),
    }) {
        Err(e) => error!("{e}"),
        Ok(Err(sig)) => contained!("the child was killed by {}", sys::signame(sig)),
        Ok(Ok(i64::MAX)) => escaped!("getpid through the x32 ABI returned the pid"),
        Ok(Ok(v)) if v < 0 => contained!("x32 getpid: {}", ename(-v as i32)),
        Ok(Ok(v)) => escaped!("x32 getpid returned {v}"),
    }
}

// ---------------------------------------------------------------------------------------------
// syscall surface

pub fn clone3(_ctx: &Ctx) -> Res {
    note("clone3 (plain fork)");
    // libc falls back to clone on ENOSYS; EPERM is the other acceptable refusal.
    match super::ns::clone3_fork(0) {
        Ok(pid) => escaped!("clone3 works (child {pid}); flags in its struct cannot be filtered, it must answer ENOSYS"),
        Err(e @ (libc::ENOSYS | libc::EPERM)) => contained!("clone3: {}", ename(e)),
        Err(e) => escaped!("clone3: {} (reachable)", ename(e)),
    }
}

pub fn io_uring_setup(_ctx: &Ctx) -> Res {
    let mut params = [0u8; 120];
    note("io_uring_setup(1)");
    let r = syscall!(sys::nr::IO_URING_SETUP, 1i64, params.as_mut_ptr());
    if let Ok(fd) = r {
        sys::close(fd as i32);
    }
    gate("io_uring_setup", r, REFUSED)
}

pub fn userfaultfd(_ctx: &Ctx) -> Res {
    const UFFD_USER_MODE_ONLY: i64 = 1;
    let mut seen = Vec::new();
    // UFFD_USER_MODE_ONLY is allowed to everyone even when vm.unprivileged_userfaultfd is 0.
    for (name, flags) in [("plain", 0i64), ("UFFD_USER_MODE_ONLY", UFFD_USER_MODE_ONLY)] {
        note(&format!("userfaultfd({name})"));
        match syscall!(sys::nr::USERFAULTFD, flags | libc::O_CLOEXEC as i64 | libc::O_NONBLOCK as i64) {
            Ok(fd) => {
                sys::close(fd as i32);
                return escaped!("userfaultfd({name}) gave fd {fd}");
            }
            Err(e) if REFUSED.contains(&e) => seen.push(format!("{name}: {}", ename(e))),
            Err(libc::EINVAL) if flags == UFFD_USER_MODE_ONLY => seen.push(format!("{name}: EINVAL (flag unknown)")),
            Err(e) => return gate(&format!("userfaultfd({name})"), Err(e), REFUSED),
        }
    }
    contained!("{}", seen.join(", "))
}

pub fn bpf(_ctx: &Ctx) -> Res {
    const BPF_MAP_CREATE: i64 = 0;
    const BPF_PROG_LOAD: i64 = 5;
    let mut seen = Vec::new();
    // An array map of one u32.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&2u32.to_ne_bytes());
    attr[4..8].copy_from_slice(&4u32.to_ne_bytes());
    attr[8..12].copy_from_slice(&4u32.to_ne_bytes());
    attr[12..16].copy_from_slice(&1u32.to_ne_bytes());
    note("bpf(BPF_MAP_CREATE)");
    match syscall!(sys::nr::BPF, BPF_MAP_CREATE, attr.as_ptr(), attr.len()) {
        Ok(fd) => {
            sys::close(fd as i32);
            return escaped!("bpf(BPF_MAP_CREATE) gave fd {fd}");
        }
        Err(e) if REFUSED.contains(&e) => seen.push(format!("map: {}", ename(e))),
        Err(e) => return gate("bpf(BPF_MAP_CREATE)", Err(e), REFUSED),
    }
    // A socket filter "r0 = 0; exit".
    let insns: [u8; 16] = [0xb7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
    let license = c"GPL";
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes());
    attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    note("bpf(BPF_PROG_LOAD socket filter)");
    match syscall!(sys::nr::BPF, BPF_PROG_LOAD, attr.as_ptr(), attr.len()) {
        Ok(fd) => {
            sys::close(fd as i32);
            escaped!("bpf(BPF_PROG_LOAD) loaded a socket filter (fd {fd})")
        }
        Err(e) if REFUSED.contains(&e) => {
            seen.push(format!("prog: {}", ename(e)));
            contained!("{}", seen.join(", "))
        }
        Err(e) => gate("bpf(BPF_PROG_LOAD)", Err(e), REFUSED),
    }
}

pub fn perf_event_open(_ctx: &Ctx) -> Res {
    // A software CPU clock on this process, user space only: what perf_event_paranoid 2 allows.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // PERF_TYPE_SOFTWARE
    attr[4..8].copy_from_slice(&128u32.to_ne_bytes()); // size
    attr[8..16].copy_from_slice(&0u64.to_ne_bytes()); // PERF_COUNT_SW_CPU_CLOCK
    attr[40..48].copy_from_slice(&(1u64 | 1 << 5 | 1 << 6).to_ne_bytes()); // disabled, exclude_kernel, exclude_hv
    const PERF_FLAG_FD_CLOEXEC: i64 = 8;
    note("perf_event_open(sw cpu clock, self)");
    let r = syscall!(sys::nr::PERF_EVENT_OPEN, attr.as_ptr(), 0i64, -1i64, -1i64, PERF_FLAG_FD_CLOEXEC);
    if let Ok(fd) = r {
        sys::close(fd as i32);
    }
    gate("perf_event_open", r, REFUSED)
}

fn personality_flag(flag: u64, name: &str) -> Res {
    note(&format!("personality({name})"));
    // This process is a throwaway child: its persona may change.
    match syscall!(sys::nr::PERSONALITY, flag) {
        Err(e) => contained!("personality({name}): {}", ename(e)),
        Ok(_) => match syscall!(sys::nr::PERSONALITY, 0xffff_ffffu64) {
            Ok(now) if now as u64 & flag != 0 => escaped!("personality({name}) took effect (persona now {now:#x})"),
            Ok(now) => contained!("personality({name}) returned success but the persona is {now:#x}"),
            Err(e) => contained!("personality({name}) accepted, query refused: {}", ename(e)),
        },
    }
}

pub fn personality_read_implies_exec(_ctx: &Ctx) -> Res {
    personality_flag(0x040_0000, "PER_LINUX|READ_IMPLIES_EXEC")
}

pub fn personality_addr_no_randomize(_ctx: &Ctx) -> Res {
    personality_flag(0x004_0000, "PER_LINUX|ADDR_NO_RANDOMIZE")
}

pub fn realtime_sched(_ctx: &Ctx) -> Res {
    let param = libc::sched_param { sched_priority: 1 };
    note("sched_setscheduler(SCHED_FIFO, 1)");
    let r = syscall!(sys::nr::SCHED_SETSCHEDULER, 0i64, libc::SCHED_FIFO as i64, &param as *const libc::sched_param);
    if r.is_ok() {
        let back = libc::sched_param { sched_priority: 0 };
        let _ = syscall!(sys::nr::SCHED_SETSCHEDULER, 0i64, libc::SCHED_OTHER as i64, &back as *const libc::sched_param);
        return escaped!("switched to SCHED_FIFO (could starve the host's CPUs)");
    }
    gate("sched_setscheduler(SCHED_FIFO)", r, REFUSED)
}
