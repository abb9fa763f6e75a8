//! Controls: ordinary work that a sandbox must not break. "contained" means it works; a broken
//! control reports "error".

use crate::sys::{self, ename, syscall, Ended};
use crate::{contained, error, note, Ctx, Res};
use std::io::{Read, Write};

pub fn fork_wait(_ctx: &Ctx) -> Res {
    // SAFETY: fork in a single-threaded process; the child leaves at once.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return error!("fork: {}", ename(sys::errno()));
    }
    if pid == 0 {
        sys::exit_now(7);
    }
    match sys::wait_pid(pid) {
        Ended::Exited(7) => contained!("fork and waitpid work"),
        e => error!("the child {e}"),
    }
}

pub fn thread(_ctx: &Ctx) -> Res {
    match std::thread::Builder::new().spawn(|| 6 * 7) {
        Err(e) => error!("pthread_create: {e}"),
        Ok(h) => match h.join() {
            Ok(42) => contained!("a thread ran and was joined"),
            _ => error!("the thread failed"),
        },
    }
}

fn ping(a: i32, b: i32) -> Result<(), String> {
    sys::write_all(a, b"ping").map_err(|e| format!("write: {}", ename(e)))?;
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        // SAFETY: reading into a buffer we own.
        let n = unsafe { libc::read(b, buf[got..].as_mut_ptr().cast(), 4 - got) };
        if n <= 0 {
            return Err(format!("read: {}", if n < 0 { ename(sys::errno()) } else { "EOF".into() }));
        }
        got += n as usize;
    }
    if &buf == b"ping" {
        Ok(())
    } else {
        Err("wrong bytes".into())
    }
}

pub fn socketpair(_ctx: &Ctx) -> Res {
    let mut sv = [0i32; 2];
    // SAFETY: socketpair into an array of two.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, sv.as_mut_ptr()) } < 0 {
        return error!("socketpair: {}", ename(sys::errno()));
    }
    let r = ping(sv[0], sv[1]);
    sys::close(sv[0]);
    sys::close(sv[1]);
    match r {
        Ok(()) => contained!("a unix socketpair carries bytes"),
        Err(e) => error!("{e}"),
    }
}

fn unix_listen_connect(addr: &[u8]) -> Result<(), String> {
    // SAFETY: plain socket calls on a zeroed sockaddr_un filled within its bounds.
    unsafe {
        let l = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if l < 0 {
            return Err(format!("socket: {}", ename(sys::errno())));
        }
        let mut sa: libc::sockaddr_un = std::mem::zeroed();
        sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (i, b) in addr.iter().enumerate() {
            sa.sun_path[i] = *b as libc::c_char;
        }
        let len = (std::mem::size_of::<libc::sa_family_t>() + addr.len()) as libc::socklen_t;
        let sp = &sa as *const libc::sockaddr_un as *const libc::sockaddr;
        if libc::bind(l, sp, len) < 0 {
            let e = sys::errno();
            sys::close(l);
            return Err(format!("bind: {}", ename(e)));
        }
        if libc::listen(l, 1) < 0 {
            let e = sys::errno();
            sys::close(l);
            return Err(format!("listen: {}", ename(e)));
        }
        let c = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if libc::connect(c, sp, len) < 0 {
            let e = sys::errno();
            sys::close(c);
            sys::close(l);
            return Err(format!("connect: {}", ename(e)));
        }
        let a = libc::accept4(l, std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC);
        let r = if a < 0 { Err(format!("accept: {}", ename(sys::errno()))) } else { ping(c, a) };
        if a >= 0 {
            sys::close(a);
        }
        sys::close(c);
        sys::close(l);
        r
    }
}

pub fn unix_socket_path(_ctx: &Ctx) -> Res {
    let path = format!("/tmp/.escape-sock-{}", sys::getpid());
    let r = unix_listen_connect(path.as_bytes());
    sys::unlink(&path);
    match r {
        Ok(()) => contained!("a unix socket at {path} accepts and carries bytes"),
        Err(e) => error!("{path}: {e}"),
    }
}

pub fn abstract_unix_own(_ctx: &Ctx) -> Res {
    let name = format!("escape-probe-own-{}", sys::getpid());
    let mut addr = vec![0u8];
    addr.extend_from_slice(name.as_bytes());
    match unix_listen_connect(&addr) {
        Ok(()) => contained!("an abstract socket of its own (@{name}) works"),
        Err(e) => error!("@{name}: {e}"),
    }
}

pub fn tmp_files(_ctx: &Ctx) -> Res {
    let path = format!("/tmp/escape-probe-{}.txt", sys::getpid());
    let r = (|| -> std::io::Result<String> {
        std::fs::write(&path, b"hello from the sandbox\n")?;
        let back = std::fs::read_to_string(&path)?;
        std::fs::remove_file(&path)?;
        Ok(back)
    })();
    match r {
        Ok(s) if s == "hello from the sandbox\n" && sys::stat(&path).is_err() => contained!("write, read and unlink in /tmp work"),
        Ok(s) => error!("read back {s:?}"),
        Err(e) => error!("{path}: {e}"),
    }
}

pub fn tcp_loopback(_ctx: &Ctx) -> Res {
    let r = (|| -> std::io::Result<()> {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = l.local_addr()?;
        let mut c = std::net::TcpStream::connect(addr)?;
        let (mut a, _) = l.accept()?;
        c.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        a.read_exact(&mut buf)?;
        if &buf != b"ping" {
            return Err(std::io::Error::other("wrong bytes"));
        }
        Ok(())
    })();
    match r {
        Ok(()) => contained!("TCP listen/connect on 127.0.0.1 works"),
        Err(e) => error!("loopback TCP: {e}"),
    }
}

pub fn netlink_socket(_ctx: &Ctx) -> Res {
    // SAFETY: socket and bind on a zeroed sockaddr_nl.
    unsafe {
        let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE);
        if fd < 0 {
            return error!("socket(AF_NETLINK, NETLINK_ROUTE): {}", ename(sys::errno()));
        }
        let mut sa: libc::sockaddr_nl = std::mem::zeroed();
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let r = libc::bind(fd, &sa as *const libc::sockaddr_nl as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t);
        let e = sys::errno();
        sys::close(fd);
        if r < 0 {
            return error!("bind(AF_NETLINK): {}", ename(e));
        }
    }
    contained!("an AF_NETLINK route socket opens and binds")
}

pub fn os_release(_ctx: &Ctx) -> Res {
    let mut refused = Vec::new();
    for p in ["/etc/os-release", "/usr/lib/os-release", "/etc/alpine-release", "/etc/debian_version", "/etc/hostname", "/etc/passwd"] {
        match sys::read_file(p, 4096) {
            Ok(b) if !b.is_empty() => {
                let first = String::from_utf8_lossy(&b).lines().next().unwrap_or("").to_owned();
                return contained!("read {p}: {first}");
            }
            Ok(_) | Err(libc::ENOENT) => {}
            Err(e) => refused.push(format!("{p}: {}", ename(e))),
        }
    }
    if refused.is_empty() {
        contained!("no os-release-like file present")
    } else {
        error!("system files unreadable: {}", refused.join(", "))
    }
}

pub fn mmap_mprotect(_ctx: &Ctx) -> Res {
    // SAFETY: an anonymous private mapping we own, written, re-protected, read and unmapped.
    unsafe {
        let p = libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0);
        if p == libc::MAP_FAILED {
            return error!("mmap: {}", ename(sys::errno()));
        }
        *(p as *mut u8) = 0xc3;
        if libc::mprotect(p, 4096, libc::PROT_READ) < 0 {
            let e = sys::errno();
            libc::munmap(p, 4096);
            return error!("mprotect(PROT_READ): {}", ename(e));
        }
        // What every JIT (V8, the JVM, LuaJIT) does: write, then make executable.
        if libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_EXEC) < 0 {
            let e = sys::errno();
            libc::munmap(p, 4096);
            return error!("mprotect(PROT_READ|PROT_EXEC): {}", ename(e));
        }
        let v = *(p as *const u8);
        libc::munmap(p, 4096);
        if v != 0xc3 {
            return error!("the mapping lost its byte");
        }
    }
    contained!("mmap, write, mprotect to read and to read+exec work")
}

pub fn exec_self(_ctx: &Ctx) -> Res {
    note("execve(/proc/self/exe --report-euid)");
    let r = sys::in_child(|out| {
        let argv = [c"/proc/self/exe".as_ptr(), c"--report-euid".as_ptr(), std::ptr::null()];
        let envp: [*const libc::c_char; 1] = [std::ptr::null()];
        // SAFETY: dup2 onto stdout, then execve with NUL-terminated vectors.
        unsafe {
            libc::dup2(out, 1);
            libc::execve(argv[0], argv.as_ptr(), envp.as_ptr());
        }
        sys::say(out, &format!("EXECFAIL {}", sys::errno()));
        sys::exit_now(127);
    });
    match r {
        Err(e) => error!("fork: {}", ename(e)),
        Ok((Ended::Exited(0), out)) if String::from_utf8_lossy(&out).contains("\"euid\"") => contained!("execve of a program works"),
        Ok((ended, out)) => error!("execve: {ended}: {}", sys::hexdump_short(&out)),
    }
}

pub fn dev_basic(_ctx: &Ctx) -> Res {
    let r = (|| -> Result<(), String> {
        let null = sys::open("/dev/null", libc::O_WRONLY).map_err(|e| format!("/dev/null: {}", ename(e)))?;
        let w = sys::write_all(null, b"discard");
        sys::close(null);
        w.map_err(|e| format!("write /dev/null: {}", ename(e)))?;
        let zero = sys::read_file("/dev/zero", 16).map_err(|e| format!("/dev/zero: {}", ename(e)))?;
        if zero.len() != 16 || zero.iter().any(|b| *b != 0) {
            return Err("/dev/zero gave something else".into());
        }
        let rnd = sys::read_file("/dev/urandom", 16).map_err(|e| format!("/dev/urandom: {}", ename(e)))?;
        if rnd.len() != 16 {
            return Err("/dev/urandom gave fewer bytes".into());
        }
        let full = sys::open("/dev/full", libc::O_WRONLY).map_err(|e| format!("/dev/full: {}", ename(e)))?;
        let w = sys::write_all(full, b"x");
        sys::close(full);
        if w != Err(libc::ENOSPC) {
            return Err(format!("/dev/full write: {w:?}"));
        }
        Ok(())
    })();
    match r {
        Ok(()) => contained!("/dev/null, /dev/zero, /dev/urandom and /dev/full behave"),
        Err(e) => error!("{e}"),
    }
}

pub fn pty_open(_ctx: &Ctx) -> Res {
    let m = match sys::open("/dev/ptmx", libc::O_RDWR | libc::O_NOCTTY) {
        Ok(fd) => fd,
        Err(e) => return error!("/dev/ptmx: {}", ename(e)),
    };
    let zero: libc::c_int = 0;
    let mut n: libc::c_int = -1;
    // SAFETY: TIOCSPTLCK reads an int, TIOCGPTN writes one.
    let ok = unsafe { libc::ioctl(m, libc::TIOCSPTLCK, &zero) == 0 && libc::ioctl(m, libc::TIOCGPTN, &mut n) == 0 };
    if !ok {
        let e = sys::errno();
        sys::close(m);
        return error!("pty ioctls: {}", ename(e));
    }
    let pts = format!("/dev/pts/{n}");
    let s = match sys::open(&pts, libc::O_RDWR | libc::O_NOCTTY) {
        Ok(fd) => fd,
        Err(e) => {
            sys::close(m);
            return error!("{pts}: {}", ename(e));
        }
    };
    // Bytes written on the terminal side come out of the master.
    let r = ping_pty(s, m);
    sys::close(s);
    sys::close(m);
    match r {
        Ok(()) => contained!("a pty ({pts}) opens and carries bytes"),
        Err(e) => error!("{pts}: {e}"),
    }
}

fn ping_pty(s: i32, m: i32) -> Result<(), String> {
    sys::write_all(s, b"ping").map_err(|e| format!("write: {}", ename(e)))?;
    let mut buf = [0u8; 16];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"ping") {
        let mut pfd = libc::pollfd { fd: m, events: libc::POLLIN, revents: 0 };
        // SAFETY: poll on one fd, then read into a buffer we own.
        let n = unsafe {
            if libc::poll(&mut pfd, 1, 5000) <= 0 {
                return Err("nothing came out of the master".into());
            }
            libc::read(m, buf.as_mut_ptr().cast(), buf.len())
        };
        if n <= 0 {
            return Err(format!("read master: {}", ename(sys::errno())));
        }
        got.extend_from_slice(&buf[..n as usize]);
    }
    Ok(())
}

pub fn pipe(_ctx: &Ctx) -> Res {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 into an array of two.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return error!("pipe2: {}", ename(sys::errno()));
    }
    let r = ping(fds[1], fds[0]);
    sys::close(fds[0]);
    sys::close(fds[1]);
    match r {
        Ok(()) => contained!("a pipe carries bytes"),
        Err(e) => error!("{e}"),
    }
}

pub fn memfd(_ctx: &Ctx) -> Res {
    const MFD_CLOEXEC: i64 = 1;
    let fd = match syscall!(sys::nr::MEMFD_CREATE, c"escape-probe".as_ptr(), MFD_CLOEXEC) {
        Ok(fd) => fd as i32,
        Err(e) => return error!("memfd_create: {}", ename(e)),
    };
    let r = sys::write_all(fd, b"memfd");
    let mut buf = [0u8; 5];
    // SAFETY: pread into a buffer we own.
    let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), 5, 0) };
    sys::close(fd);
    if r.is_ok() && n == 5 && &buf == b"memfd" {
        contained!("memfd_create, write and pread work")
    } else {
        error!("memfd: write {r:?}, read {n}")
    }
}

pub fn getrandom(_ctx: &Ctx) -> Res {
    let mut buf = [0u8; 16];
    // SAFETY: getrandom into a buffer we own.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n == 16 {
        contained!("getrandom gave 16 bytes")
    } else {
        error!("getrandom: {}", if n < 0 { ename(sys::errno()) } else { format!("{n} bytes") })
    }
}
