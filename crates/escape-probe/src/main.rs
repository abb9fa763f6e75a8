//! escape-probe: run inside a sandbox, it tries one attack per probe and prints one JSON line per
//! probe: `{"probe":"name","category":"...","result":"contained"|"escaped"|"error","detail":"..."}`.
//! The exit code is 0 only when every probe that ran is contained.
//!
//! Usage: escape-probe [--host-pid N] [--host-env NAME] [--host-marker PATH] [--host-shm NAME]
//!                     [--host-keyring ID] [--abstract NAME] [--setuid-fixture PATH]
//!                     [--device-fixture PATH] [PROBE|CATEGORY...]
//!        escape-probe --list            (names and categories, one per line)
//!        escape-probe --report-euid     (what the kernel gave this exec: ids, caps, no_new_privs)
//!        escape-probe --report-keyring  (this process's session keyring serial)
//!
//! Every probe runs in a forked child of its own, so a probe that changes its process (unshare,
//! personality, setsid) or gets killed (seccomp) never affects the next. Probes never harm a host
//! they reach: kernel knobs are opened for writing and closed without a write, kexec and module
//! calls get arguments the kernel rejects right after its permission check, mknod happens in
//! /tmp only, and whatever a successful attack mounted or created is undone.
//!
//! For the probes of category "control", "contained" means "works as it should".

mod probes;
mod sys;

use std::io::Write;

pub enum Res {
    Contained(String),
    Escaped(String),
    Error(String),
}

macro_rules! contained { ($($t:tt)*) => { $crate::Res::Contained(format!($($t)*)) } }
macro_rules! escaped { ($($t:tt)*) => { $crate::Res::Escaped(format!($($t)*)) } }
macro_rules! error { ($($t:tt)*) => { $crate::Res::Error(format!($($t)*)) } }
pub(crate) use {contained, error, escaped};

/// What the process saw before it did anything (the fd and cwd probes report on this).
pub struct Start {
    /// Open fds found by fcntl(F_GETFD) over the whole fd range, with their /proc/self/fd targets.
    pub fds: Vec<(i32, String)>,
    /// The fds /proc/self/fd listed (excluding the descriptor used to list it), or the errno.
    pub proc_fds: Result<Vec<i32>, i32>,
    pub cwd: Result<String, i32>,
    pub proc_cwd: Result<String, i32>,
    pub proc_root: Result<String, i32>,
    /// (dev, ino) of "." and "/" and of the top reached by walking ".." from the cwd.
    pub cwd_id: Result<(u64, u64), i32>,
    pub root_id: Result<(u64, u64), i32>,
    pub cwd_top: Result<(u64, u64), i32>,
}

pub struct Ctx {
    pub host_pid: Option<i32>,
    pub host_env: Option<String>,
    pub host_marker: Option<String>,
    pub host_shm: Option<String>,
    pub host_keyring: Option<i64>,
    pub abstract_name: Option<String>,
    pub setuid_fixture: Option<String>,
    pub device_fixture: Option<String>,
    pub start: Start,
}

pub struct Probe {
    pub name: &'static str,
    pub category: &'static str,
    pub run: fn(&Ctx) -> Res,
}

fn snapshot() -> Start {
    // Before anything else opens a descriptor: fcntl over the fd range, then /proc/self/fd.
    let mut lim: libc::rlimit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit into a struct we own.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    let top = lim.rlim_cur.clamp(1024, 1 << 20) as i32;
    let mut open_fds = Vec::new();
    for fd in 0..top {
        // SAFETY: F_GETFD only queries.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 {
            open_fds.push(fd);
        }
    }
    let proc_fds = (|| {
        let path = sys::cs("/proc/self/fd");
        // SAFETY: opendir/readdir/closedir on a directory stream we own.
        unsafe {
            let d = libc::opendir(path.as_ptr());
            if d.is_null() {
                return Err(sys::errno());
            }
            let own = libc::dirfd(d);
            let mut v = Vec::new();
            loop {
                let ent = libc::readdir(d);
                if ent.is_null() {
                    break;
                }
                let name = std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()).to_string_lossy().into_owned();
                if let Ok(n) = name.parse::<i32>() {
                    if n != own {
                        v.push(n);
                    }
                }
            }
            libc::closedir(d);
            Ok(v)
        }
    })();
    let fds = open_fds.iter().map(|fd| (*fd, sys::readlink(&format!("/proc/self/fd/{fd}")).unwrap_or_else(sys::ename))).collect();
    let cwd = std::env::current_dir().map(|p| p.to_string_lossy().into_owned()).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO));
    let cwd_id = sys::stat(".").map(|s| sys::id_of(&s));
    let root_id = sys::stat("/").map(|s| sys::id_of(&s));
    // Walk ".." from the cwd until it stops moving: the top must be our own root.
    let cwd_top = (|| {
        let mut fd = sys::open(".", libc::O_RDONLY | libc::O_DIRECTORY)?;
        let mut id = sys::id_of(&sys::fstat(fd)?);
        for _ in 0..4096 {
            // SAFETY: openat relative to a directory fd we own.
            let up = unsafe { libc::openat(fd, c"..".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
            if up < 0 {
                let e = sys::errno();
                sys::close(fd);
                return Err(e);
            }
            let next = sys::id_of(&sys::fstat(up)?);
            sys::close(fd);
            fd = up;
            if next == id {
                break;
            }
            id = next;
        }
        sys::close(fd);
        Ok(id)
    })();
    Start { fds, proc_fds, cwd, proc_cwd: sys::readlink("/proc/self/cwd"), proc_root: sys::readlink("/proc/self/root"), cwd_id, root_id, cwd_top }
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn one_line(s: &str, max: usize) -> String {
    let s: String = s.chars().map(|c| if c == '\n' || c == '\r' { ' ' } else { c }).collect();
    if s.chars().count() > max {
        let t: String = s.chars().take(max).collect();
        format!("{t}...")
    } else {
        s
    }
}

/// Where a probe's child writes its notes ("about to call X") and its result.
static mut REPORT_FD: i32 = -1;

/// Record the step a probe is about to take; if the process dies there (seccomp kill), the
/// parent names the step.
pub fn note(step: &str) {
    // SAFETY: REPORT_FD is written once in the child before the probe runs, read after.
    let fd = unsafe { REPORT_FD };
    if fd >= 0 {
        sys::say(fd, &format!("N {}\n", one_line(step, 200)));
    }
}

const PROBE_TIMEOUT_MS: i64 = 20_000;

fn now_ms() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime into a struct we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
}

fn run_probe(p: &Probe, ctx: &Ctx) -> Res {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 into an array of two.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return error!("pipe2: {}", sys::ename(sys::errno()));
    }
    let _ = std::io::stdout().flush();
    // SAFETY: the probe process is single-threaded here.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = sys::errno();
        sys::close(fds[0]);
        sys::close(fds[1]);
        return error!("fork: {}", sys::ename(e));
    }
    if pid == 0 {
        sys::close(fds[0]);
        // SAFETY: single-threaded child, before the probe runs.
        unsafe { REPORT_FD = fds[1] };
        let r = (p.run)(ctx);
        let (tag, d) = match &r {
            Res::Contained(d) => ('c', d),
            Res::Escaped(d) => ('e', d),
            Res::Error(d) => ('x', d),
        };
        sys::say(fds[1], &format!("R {tag} {}\n", one_line(d, 600)));
        sys::exit_now(0);
    }
    sys::close(fds[1]);
    let deadline = now_ms() + PROBE_TIMEOUT_MS;
    let mut buf = Vec::new();
    let mut timed_out = false;
    loop {
        let left = deadline - now_ms();
        if left <= 0 {
            timed_out = true;
            break;
        }
        let mut pfd = libc::pollfd { fd: fds[0], events: libc::POLLIN, revents: 0 };
        // SAFETY: poll on one fd we own.
        let r = unsafe { libc::poll(&mut pfd, 1, left as i32) };
        if r < 0 {
            if sys::errno() == libc::EINTR {
                continue;
            }
            break;
        }
        if r == 0 {
            continue;
        }
        let mut chunk = [0u8; 4096];
        // SAFETY: reading into a buffer we own.
        let n = unsafe { libc::read(fds[0], chunk.as_mut_ptr().cast(), chunk.len()) };
        if n <= 0 {
            if n < 0 && sys::errno() == libc::EINTR {
                continue;
            }
            break;
        }
        buf.extend_from_slice(&chunk[..n as usize]);
    }
    sys::close(fds[0]);
    if timed_out {
        // SAFETY: killing our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let ended = sys::wait_pid(pid);
    let text = String::from_utf8_lossy(&buf);
    let mut last_step = String::from("(start)");
    for line in text.lines() {
        if let Some(step) = line.strip_prefix("N ") {
            last_step = step.to_owned();
        } else if let Some(rest) = line.strip_prefix("R ") {
            let (tag, detail) = rest.split_at(1.min(rest.len()));
            let detail = detail.trim_start().to_owned();
            return match tag {
                "c" => Res::Contained(detail),
                "e" => Res::Escaped(detail),
                _ => Res::Error(detail),
            };
        }
    }
    if timed_out {
        return error!("timed out after {} s at: {last_step}", PROBE_TIMEOUT_MS / 1000);
    }
    match ended {
        // The kernel (seccomp) killed the process at the attack: it did not happen.
        sys::Ended::Signaled(libc::SIGSYS) if p.category != "control" => {
            contained!("killed by SIGSYS (seccomp) at: {last_step}")
        }
        e => error!("the probe's process {e} without a result, at: {last_step}"),
    }
}

fn report_euid() -> i32 {
    let (mut r, mut e, mut s) = (0u32, 0u32, 0u32);
    // SAFETY: getresuid into three u32s.
    unsafe { libc::getresuid(&mut r, &mut e, &mut s) };
    let status = sys::read_string("/proc/self/status").unwrap_or_default();
    let f = |n: &str| sys::status_field(&status, n).unwrap_or_else(|| "?".into());
    println!(
        "{{\"uid\":{r},\"euid\":{e},\"suid\":{s},\"capinh\":{},\"capprm\":{},\"capeff\":{},\"capbnd\":{},\"capamb\":{},\"nnp\":{}}}",
        json_str(&f("CapInh")),
        json_str(&f("CapPrm")),
        json_str(&f("CapEff")),
        json_str(&f("CapBnd")),
        json_str(&f("CapAmb")),
        sys::no_new_privs()
    );
    0
}

fn report_keyring() -> i32 {
    const KEYCTL_GET_KEYRING_ID: i64 = 0;
    const KEY_SPEC_SESSION_KEYRING: i64 = -3;
    match sys::syscall!(sys::nr::KEYCTL, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0i64) {
        Ok(id) => println!("{id}"),
        Err(e) => println!("-{e}"),
    }
    0
}

fn usage(msg: &str) -> ! {
    eprintln!("escape-probe: {msg}");
    eprintln!("usage: escape-probe [--host-pid N] [--host-env NAME] [--host-marker PATH] [--host-shm NAME] [--host-keyring ID] [--abstract NAME] [--setuid-fixture PATH] [--device-fixture PATH] [PROBE|CATEGORY...]");
    eprintln!("       escape-probe --list | --report-euid | --report-keyring");
    std::process::exit(2)
}

fn main() {
    // First, before any descriptor is opened by us.
    let start = snapshot();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let all = probes::all();
    let mut ctx = Ctx {
        host_pid: None,
        host_env: None,
        host_marker: None,
        host_shm: None,
        host_keyring: None,
        abstract_name: None,
        setuid_fixture: None,
        device_fixture: None,
        start,
    };
    let mut selected: Vec<&Probe> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let mut value = || {
            i += 1;
            args.get(i).cloned().unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a {
            "--report-euid" => std::process::exit(report_euid()),
            "--report-keyring" => std::process::exit(report_keyring()),
            "--list" => {
                for p in &all {
                    println!("{} {}", p.name, p.category);
                }
                return;
            }
            "--host-pid" => ctx.host_pid = Some(value().parse().unwrap_or_else(|_| usage("--host-pid takes a number"))),
            "--host-env" => ctx.host_env = Some(value()),
            "--host-marker" => ctx.host_marker = Some(value()),
            "--host-shm" => ctx.host_shm = Some(value()),
            "--host-keyring" => ctx.host_keyring = Some(value().parse().unwrap_or_else(|_| usage("--host-keyring takes a number"))),
            "--abstract" => ctx.abstract_name = Some(value()),
            "--setuid-fixture" => ctx.setuid_fixture = Some(value()),
            "--device-fixture" => ctx.device_fixture = Some(value()),
            "-h" | "--help" => usage("help"),
            s if s.starts_with('-') => usage(&format!("unknown option {s}")),
            name => match all.iter().find(|p| p.name == name || p.category == name) {
                Some(_) => selected.extend(all.iter().filter(|p| p.name == name || p.category == name)),
                None => usage(&format!("unknown probe {name}")),
            },
        }
        i += 1;
    }
    if selected.is_empty() {
        selected = all.iter().collect();
    }
    let mut all_contained = true;
    let out = std::io::stdout();
    for p in selected {
        let r = run_probe(p, &ctx);
        let (result, detail) = match &r {
            Res::Contained(d) => ("contained", d),
            Res::Escaped(d) => ("escaped", d),
            Res::Error(d) => ("error", d),
        };
        if result != "contained" {
            all_contained = false;
        }
        let mut lock = out.lock();
        let _ = writeln!(
            lock,
            "{{\"probe\":{},\"category\":{},\"result\":{},\"detail\":{}}}",
            json_str(p.name),
            json_str(p.category),
            json_str(result),
            json_str(&one_line(detail, 600))
        );
        let _ = lock.flush();
    }
    std::process::exit(if all_contained { 0 } else { 1 })
}
