//! Terminals, socket families, the host's unix sockets, network interfaces and the hostname.

use crate::sys::{self, ename, syscall};
use crate::{contained, error, escaped, note, Ctx, Res};

// ---------------------------------------------------------------------------------------------
// TIOCSTI

fn tiocsti_probe(high_bits: bool) -> Res {
    // TIOCSTI works on one's own controlling terminal: make a pty ours and try it there. This
    // process is a throwaway child, so it may start a session of its own. Closing the terminal at
    // the end hangs it up, which would SIGHUP us as its session leader: ignore that.
    // SAFETY: setting a signal to SIG_IGN.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    let c: u8 = b'#';
    let cmd: u64 = libc::TIOCSTI | if high_bits { 1u64 << 32 } else { 0 };
    let what = if high_bits { "TIOCSTI|1<<32" } else { "TIOCSTI" };
    // First any terminal among the standard fds (the caller's, if the sandbox was given one).
    for fd in 0..3 {
        // SAFETY: isatty on a descriptor number.
        if unsafe { libc::isatty(fd) } == 1 {
            note(&format!("ioctl(fd {fd}, {cmd:#x})"));
            if syscall!(sys::nr::IOCTL, fd as i64, cmd, &c as *const u8).is_ok() {
                return escaped!("ioctl({what}) on the terminal at fd {fd} pushed a byte into its input");
            }
        }
    }
    let m = match sys::open("/dev/ptmx", libc::O_RDWR | libc::O_NOCTTY) {
        Ok(fd) => fd,
        Err(e) => return contained!("no pty to inject into: /dev/ptmx {}", ename(e)),
    };
    let zero: libc::c_int = 0;
    let mut n: libc::c_int = -1;
    // SAFETY: TIOCSPTLCK reads an int, TIOCGPTN writes one.
    unsafe {
        libc::ioctl(m, libc::TIOCSPTLCK, &zero);
        if libc::ioctl(m, libc::TIOCGPTN, &mut n) < 0 {
            return error!("TIOCGPTN: {}", ename(sys::errno()));
        }
        if libc::setsid() < 0 {
            return error!("setsid: {}", ename(sys::errno()));
        }
    }
    let pts = format!("/dev/pts/{n}");
    // Without O_NOCTTY: a session leader with no terminal acquires this one.
    let s = match sys::open(&pts, libc::O_RDWR) {
        Ok(fd) => fd,
        Err(e) => return error!("open {pts}: {}", ename(e)),
    };
    let mut sid: libc::pid_t = 0;
    // SAFETY: TIOCGSID writes a pid_t.
    let is_ctty = unsafe { libc::ioctl(s, libc::TIOCGSID, &mut sid) } == 0 && sid == sys::getpid();
    if !is_ctty {
        // SAFETY: TIOCSCTTY with argument 0.
        unsafe { libc::ioctl(s, libc::TIOCSCTTY, 0) };
    }
    note(&format!("ioctl({pts}, {cmd:#x})"));
    let r = syscall!(sys::nr::IOCTL, s as i64, cmd, &c as *const u8);
    sys::close(s);
    sys::close(m);
    match r {
        Ok(_) => escaped!("ioctl({what}) pushed a byte into the input of its controlling terminal {pts}"),
        Err(e) if sys::is_resource_error(e) => error!("ioctl({what}): {}", ename(e)),
        Err(e) => contained!("ioctl({what}) on its own controlling terminal: {}", ename(e)),
    }
}

pub fn tiocsti(_ctx: &Ctx) -> Res {
    tiocsti_probe(false)
}

pub fn tiocsti_high_bits(_ctx: &Ctx) -> Res {
    tiocsti_probe(true)
}

pub fn ctty_none(_ctx: &Ctx) -> Res {
    // The command runs in a new session without a terminal: /dev/tty must not reach the caller's.
    let ttys: Vec<i32> = (0..3).filter(|fd| unsafe { libc::isatty(*fd) } == 1).collect();
    note("open /dev/tty");
    match sys::open("/dev/tty", libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK) {
        Ok(fd) => {
            sys::close(fd);
            escaped!("/dev/tty opened: the sandbox has a controlling terminal")
        }
        Err(e) if sys::is_resource_error(e) => error!("/dev/tty: {}", ename(e)),
        Err(e) => contained!("/dev/tty: {}; std fds that are terminals: {ttys:?}", ename(e)),
    }
}

// ---------------------------------------------------------------------------------------------
// socket families

fn sockets(family: i32, name: &str, kinds: &[(i32, &str, i32)]) -> Res {
    let mut seen = Vec::new();
    for (ty, tyname, proto) in kinds {
        note(&format!("socket({name}, {tyname}, {proto})"));
        // SAFETY: socket with integer arguments.
        let fd = unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, *proto) };
        if fd >= 0 {
            sys::close(fd);
            return escaped!("socket({name}, {tyname}, {proto}) = fd {fd}");
        }
        let e = sys::errno();
        if sys::is_resource_error(e) {
            return error!("socket({name}, {tyname}): {}", ename(e));
        }
        seen.push(format!("{tyname}: {}", ename(e)));
    }
    contained!("{name}: {}", seen.join(", "))
}

pub fn af_vsock(_ctx: &Ctx) -> Res {
    // vsock is not network-namespaced: it reaches the VM's host from any namespace.
    sockets(
        libc::AF_VSOCK,
        "AF_VSOCK",
        &[(libc::SOCK_STREAM, "SOCK_STREAM", 0), (libc::SOCK_DGRAM, "SOCK_DGRAM", 0), (libc::SOCK_SEQPACKET, "SOCK_SEQPACKET", 0)],
    )
}

pub fn af_packet(_ctx: &Ctx) -> Res {
    let all = (libc::ETH_P_ALL as u16).to_be() as i32;
    sockets(libc::AF_PACKET, "AF_PACKET", &[(libc::SOCK_RAW, "SOCK_RAW", all), (libc::SOCK_DGRAM, "SOCK_DGRAM", all)])
}

pub fn af_key(_ctx: &Ctx) -> Res {
    sockets(libc::AF_KEY, "AF_KEY", &[(libc::SOCK_RAW, "SOCK_RAW", 2)])
}

pub fn af_alg(_ctx: &Ctx) -> Res {
    sockets(libc::AF_ALG, "AF_ALG", &[(libc::SOCK_SEQPACKET, "SOCK_SEQPACKET", 0)])
}

pub fn af_bluetooth(_ctx: &Ctx) -> Res {
    sockets(
        libc::AF_BLUETOOTH,
        "AF_BLUETOOTH",
        &[(libc::SOCK_RAW, "SOCK_RAW", 1), (libc::SOCK_SEQPACKET, "SOCK_SEQPACKET", 0), (libc::SOCK_STREAM, "SOCK_STREAM", 3)],
    )
}

pub fn af_inet_raw(_ctx: &Ctx) -> Res {
    let a = sockets(libc::AF_INET, "AF_INET", &[(libc::SOCK_RAW, "SOCK_RAW", libc::IPPROTO_ICMP), (libc::SOCK_RAW, "SOCK_RAW", libc::IPPROTO_RAW)]);
    let Res::Contained(d4) = a else { return a };
    let b = sockets(libc::AF_INET6, "AF_INET6", &[(libc::SOCK_RAW, "SOCK_RAW", libc::IPPROTO_ICMPV6)]);
    let Res::Contained(d6) = b else { return b };
    contained!("{d4}; {d6}")
}

// ---------------------------------------------------------------------------------------------
// unix sockets of the host

fn connect_unix(addr: &[u8], ty: i32) -> Result<(), i32> {
    // SAFETY: socket with integer arguments.
    let fd = unsafe { libc::socket(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(sys::errno());
    }
    // SAFETY: a zeroed sockaddr_un filled within its bounds.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if addr.len() > sa.sun_path.len() {
        sys::close(fd);
        return Err(libc::ENAMETOOLONG);
    }
    for (i, b) in addr.iter().enumerate() {
        sa.sun_path[i] = *b as libc::c_char;
    }
    let len = (std::mem::size_of::<libc::sa_family_t>() + addr.len()) as libc::socklen_t;
    // SAFETY: connect with the address and its real length (abstract names are not NUL-terminated).
    let r = unsafe { libc::connect(fd, &sa as *const libc::sockaddr_un as *const libc::sockaddr, len) };
    let e = sys::errno();
    sys::close(fd);
    if r == 0 {
        Ok(())
    } else {
        Err(e)
    }
}

pub fn abstract_unix_host(ctx: &Ctx) -> Res {
    let Some(name) = ctx.abstract_name.as_deref() else { return error!("no --abstract NAME given") };
    let name = name.trim_start_matches('\0').trim_start_matches('@');
    // Abstract names are compared with their length: libuv (Node before 22) binds the name
    // padded with NULs to the whole sun_path, others bind the exact bytes. Try both.
    let mut exact = vec![0u8];
    exact.extend_from_slice(name.as_bytes());
    let mut padded = exact.clone();
    padded.resize(108, 0);
    let mut errs = Vec::new();
    for (form, addr) in [("exact", exact), ("NUL-padded", padded)] {
        note(&format!("connect(@{name}, {form})"));
        match connect_unix(&addr, libc::SOCK_STREAM) {
            Ok(()) => return escaped!("connected to the host's abstract socket @{name} ({form} name)"),
            Err(e @ (libc::ECONNREFUSED | libc::ENOENT | libc::EPERM | libc::EACCES)) => errs.push(format!("{form}: {}", ename(e))),
            Err(e) => return error!("connect(@{name}, {form}): {}", ename(e)),
        }
    }
    // The network namespace's socket table must not list it either.
    if let Ok(table) = sys::read_string("/proc/net/unix") {
        if let Some(line) = table.lines().find(|l| l.split_whitespace().nth(7).is_some_and(|p| p.trim_end_matches('@') == format!("@{name}"))) {
            return escaped!("/proc/net/unix lists the host's @{name}: {}", line.trim());
        }
    }
    contained!("connect(@{name}): {}", errs.join(", "))
}

pub fn host_unix_sockets(_ctx: &Ctx) -> Res {
    let paths = [
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/run/containerd/containerd.sock",
        "/run/podman/podman.sock",
        "/run/crio/crio.sock",
        "/run/k3s/containerd/containerd.sock",
        "/run/dbus/system_bus_socket",
        "/var/run/dbus/system_bus_socket",
        "/run/systemd/private",
        "/run/systemd/journal/socket",
        "/run/systemd/journal/stdout",
        "/run/systemd/notify",
        "/run/systemd/userdb/io.systemd.DynamicUser",
        "/dev/log",
        "/run/user/0/bus",
        "/run/snapd.socket",
        "/var/run/nscd/socket",
        "/run/udev/control",
        "/tmp/.X11-unix/X0",
        "/run/libvirt/libvirt-sock",
    ];
    let mut seen = Vec::new();
    for p in paths {
        if sys::lstat(p).is_err() {
            continue;
        }
        note(&format!("connect({p})"));
        for ty in [libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET] {
            match connect_unix(p.as_bytes(), ty) {
                Ok(()) => return escaped!("connected to the host's {p}"),
                Err(libc::EPROTOTYPE) => continue,
                Err(e) => {
                    seen.push(format!("{p}: {}", ename(e)));
                    break;
                }
            }
        }
    }
    if seen.is_empty() {
        contained!("none of {} well-known host sockets is present", paths.len())
    } else {
        contained!("present but refused: {}", seen.join(", "))
    }
}

// ---------------------------------------------------------------------------------------------
// network and hostname

pub fn net_interfaces(_ctx: &Ctx) -> Res {
    let text = match sys::read_string("/proc/net/dev") {
        Ok(t) => t,
        Err(e) => return error!("/proc/net/dev: {}", ename(e)),
    };
    let names: Vec<String> = text.lines().skip(2).filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_owned())).collect();
    let others: Vec<&String> = names.iter().filter(|n| n.as_str() != "lo").collect();
    if others.is_empty() {
        contained!("interfaces: {}", names.join(","))
    } else {
        escaped!("interfaces besides lo: {}", others.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","))
    }
}

pub fn sethostname(_ctx: &Ctx) -> Res {
    // Set the names to what they already are: the same permission check as a change
    // (CAP_SYS_ADMIN over the UTS namespace), and no change wherever it works.
    let mut buf = [0u8; 256];
    // SAFETY: gethostname into a buffer we own.
    unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let len = buf.iter().position(|b| *b == 0).unwrap_or(0);
    let name = String::from_utf8_lossy(&buf[..len]).into_owned();
    note(&format!("sethostname({name})"));
    // SAFETY: a buffer and its length.
    if unsafe { libc::sethostname(buf.as_ptr().cast(), len) } == 0 {
        return escaped!("sethostname is allowed (set {name:?} again)");
    }
    let e1 = sys::errno();
    let mut dbuf = [0u8; 256];
    // SAFETY: getdomainname into a buffer we own.
    unsafe { libc::getdomainname(dbuf.as_mut_ptr().cast(), dbuf.len()) };
    let dlen = dbuf.iter().position(|b| *b == 0).unwrap_or(0);
    note("setdomainname(same)");
    // SAFETY: a buffer and its length.
    if unsafe { libc::setdomainname(dbuf.as_ptr().cast(), dlen) } == 0 {
        return escaped!("setdomainname is allowed");
    }
    let e2 = sys::errno();
    match (e1, e2) {
        (libc::EPERM | libc::EACCES | libc::ENOSYS, libc::EPERM | libc::EACCES | libc::ENOSYS) => {
            contained!("sethostname: {}; setdomainname: {}", ename(e1), ename(e2))
        }
        _ => error!("sethostname: {}; setdomainname: {}", ename(e1), ename(e2)),
    }
}
